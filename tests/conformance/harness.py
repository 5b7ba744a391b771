"""Run the official JSON-Schema-Test-Suite through the engine, byte by byte and token by token.

For every test group of ``draftX/*.json`` for drafts 2020-12, 2019-09, 7, 6 and 4 (the *required* tests)
and of
``optional/format/*.json`` (reported apart as *optional*), the group's schema is compiled with the
spec-default options (:data:`OPTIONS`).  Then every test instance is written as JSON text in up to
three spellings (``json.dumps`` with its default ``", "``/``": "`` separators, compact, and compact
with every non-ASCII character as a ``\\u`` escape) and checked:

* byte level -- ``automaton.matches``: a valid instance must be accepted to an accepting state, an
  invalid one refused at some byte or left incomplete;
* token level (a real tokenizer, llama3 by default) -- the text is tokenized with
  ``tokenizers.Tokenizer.encode(add_special_tokens=False)`` and fed to a :class:`Matcher`; a valid
  instance must have every token accepted, be accepting at the end and take an end token; an
  invalid one must be refused at some token or be incomplete.  Optionally (``check_masks``) the
  packed token mask is also consulted: every token on a valid instance's path must be allowed by
  the mask, and the token an invalid instance is refused at must not be.

Outcomes, one per test (the worst over spellings and levels, in :data:`SEVERITY` order):

``pass``, ``unsupported`` (the schema does not compile: SchemaError/EnforcerError, message kept),
``skipped`` (the instance cannot be written faithfully as JSON text), and the engine bugs
``accepted-invalid``, ``rejected-valid`` (also: the compiler claims the schema admits no value
although the group has a valid instance), ``token-accepted-invalid`` / ``token-rejected-valid``
(byte level and token level disagree), ``mask-rejected-valid`` / ``mask-unsound`` (the token mask
and the automaton disagree) and ``error`` (the engine raised something that is not an
EnforcerError).

Remote ``$ref`` targets come from the suite's ``remotes/`` folder, registered under
``http://localhost:1234/<path>`` as the suite prescribes, plus the draft meta-schemas that ship with
``jsonschema`` (``jsonschema_specifications``); nothing is fetched from the network.

Command line (from the repository root)::

    python -m tests.conformance.harness --draft all --tokenizer llama3
    python -m tests.conformance.harness --write-baseline        # re-write tests/conformance/baseline.json
    python -m tests.conformance.harness --markdown              # the tables of docs/conformance.md
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import lzma
import math
import sys
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import referencing
import referencing.jsonschema

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python tests/conformance/harness.py` from anywhere
    sys.path.insert(0, str(REPO))

from exl2_enforcer.compile.schema.compiler import SchemaOptions  # noqa: E402
from exl2_enforcer.engine.mask import TokenIndex  # noqa: E402
from exl2_enforcer.errors import EnforcerError  # noqa: E402
from exl2_enforcer.grammar import CompiledGrammar, compile_json_schema  # noqa: E402
from exl2_enforcer.matcher import Matcher  # noqa: E402
from exl2_enforcer.tokens.vocabulary import TokenVocabulary  # noqa: E402

SHARED = REPO.parent / "shared"
#: the vendored subset of the official suite (the five drafts' folders, remotes, LICENSE)
SUITE = Path(__file__).resolve().parent / "suite"
TOKENIZERS = SHARED / "tokenizers"
MINI_LLAMA3 = REPO / "tests" / "data" / "mini_llama3.tokenizer.json.xz"
BASELINE = Path(__file__).resolve().parent / "baseline.json"
REMOTE_BASE = "http://localhost:1234/"

#: the spec's semantics: open objects, every escape spelling, 1.0 is an integer, any member order,
#: and ``format`` as an annotation (draft 2020-12's default; the required tests expect it)
OPTIONS = SchemaOptions(strict_objects=False, escapes="all", integral_fractions=True, property_order="any",
                        max_depth=16, max_whitespace=20, format_assertion=False)
#: the optional format tests assert formats
FORMAT_OPTIONS = dataclasses.replace(OPTIONS, format_assertion=True)

#: draft name on the command line -> (suite folder, referencing specification, $schema to add)
DRAFTS: dict[str, tuple[str, Any, str | None]] = {
    "2020-12": ("draft2020-12", referencing.jsonschema.DRAFT202012, None),
    "2019-09": ("draft2019-09", referencing.jsonschema.DRAFT201909, "https://json-schema.org/draft/2019-09/schema"),
    "7": ("draft7", referencing.jsonschema.DRAFT7, "http://json-schema.org/draft-07/schema#"),
    "6": ("draft6", referencing.jsonschema.DRAFT6, "http://json-schema.org/draft-06/schema#"),
    "4": ("draft4", referencing.jsonschema.DRAFT4, "http://json-schema.org/draft-04/schema#"),
}

PASS, UNSUPPORTED, SKIPPED = "pass", "unsupported", "skipped"
ACCEPTED_INVALID, REJECTED_VALID = "accepted-invalid", "rejected-valid"
TOKEN_ACCEPTED_INVALID, TOKEN_REJECTED_VALID = "token-accepted-invalid", "token-rejected-valid"
MASK_REJECTED_VALID, MASK_UNSOUND = "mask-rejected-valid", "mask-unsound"
ERROR = "error"
#: worst first: a test's outcome is the worst found over its spellings and levels
SEVERITY = (ERROR, ACCEPTED_INVALID, REJECTED_VALID, TOKEN_ACCEPTED_INVALID, TOKEN_REJECTED_VALID,
            MASK_UNSOUND, MASK_REJECTED_VALID, UNSUPPORTED, SKIPPED, PASS)
#: outcomes that are engine bugs (wrong answers, inconsistencies, crashes)
BUGS = frozenset(SEVERITY[:7])
#: in the optional format tests a refused valid string is the documented price of a sound subset
#: ("everything accepted is valid", docs/schema-support.md); everything else in BUGS is still a bug
OPTIONAL_TOLERATED = frozenset({REJECTED_VALID})

KIND_REQUIRED, KIND_OPTIONAL = "required", "optional-format"


# --------------------------------------------------------------------------- suite loading

class RawFloat(str):
    """A JSON number literal with a fraction or exponent, exactly as the suite file spells it."""


@dataclass
class GroupResult:
    """One test group: its schema compiled (or not) and its tests run."""

    key: str                       # "draft2020-12/ref.json/3"
    draft: str                     # "draft2020-12"
    file: str                      # "ref.json", "optional/format/date.json"
    kind: str                      # KIND_REQUIRED or KIND_OPTIONAL
    index: int
    description: str
    schema: Any                    # as given to the engine
    compiled: bool = False
    error: str | None = None       # the compile error message when not compiled
    error_type: str | None = None  # "SchemaError", ..., or the crash's type
    crashed: bool = False          # the compiler raised something that is not an EnforcerError
    compile_s: float = 0.0
    run_s: float = 0.0
    tests: list["TestResult"] = field(default_factory=list)


@dataclass
class TestResult:
    """One test instance and what the engine did with it."""

    key: str                       # "draft2020-12/ref.json/3/1"
    group: GroupResult
    index: int
    description: str
    valid: bool
    data: Any
    outcome: str = PASS
    detail: str = ""               # why, for anything but a pass
    spelling: str | None = None    # the spelling that showed a bug
    text: bytes | None = None      # its bytes
    token_checked: bool = False

    @property
    def bug(self) -> bool:
        """Whether the outcome is an engine bug (in optional tests: one that is not tolerated)."""
        if self.outcome not in BUGS:
            return False
        return not (self.group.kind == KIND_OPTIONAL and self.outcome in OPTIONAL_TOLERATED)


def suite_files(draft_dir: str, optional: bool) -> list[tuple[str, str, Path]]:
    """(kind, path relative to the draft folder, file) for the required and optional format tests."""
    root = SUITE / draft_dir
    out = [(KIND_REQUIRED, p.name, p) for p in sorted(root.glob("*.json"))]
    if optional:
        out += [(KIND_OPTIONAL, p.relative_to(root).as_posix(), p)
                for p in sorted((root / "optional" / "format").glob("*.json"))]
    return out


def load_registry(spec: Any) -> referencing.Registry:
    """Every document of ``remotes/`` under its localhost:1234 URI, plus the draft meta-schemas."""
    try:
        import jsonschema_specifications
        registry = jsonschema_specifications.REGISTRY
    except ImportError:  # pragma: no cover - a dependency of jsonschema >= 4.18
        registry = referencing.Registry()
    remotes = SUITE / "remotes"
    resources = []
    for path in sorted(remotes.rglob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        if spec is referencing.jsonschema.DRAFT4 and _has_boolean_schema(contents):
            continue  # draft 4 has no boolean schemas (its id lookup cannot read one)
        uri = REMOTE_BASE + path.relative_to(remotes).as_posix()
        resources.append((uri, referencing.Resource.from_contents(contents, default_specification=spec)))
    return registry.with_resources(resources).crawl()


def _has_boolean_schema(doc: Any) -> bool:
    if isinstance(doc, bool):
        return True
    if isinstance(doc, dict):
        return any(_has_boolean_schema(v) for k, v in doc.items() if k not in ("enum", "const", "default"))
    if isinstance(doc, list):
        return any(_has_boolean_schema(v) for v in doc)
    return False


def prepare_schema(schema: Any, add_schema: str | None) -> Any:
    """The schema the engine gets: draft-7 groups name draft-07 (the engine's draft switch)."""
    if add_schema and isinstance(schema, dict) and "$schema" not in schema:
        return {"$schema": add_schema, **schema}
    return schema


# --------------------------------------------------------------------------- instance texts

class Unwritable(Exception):
    """The instance cannot be written as JSON text that means what the suite means."""


def _check_faithful(value: Any, raw: Any) -> None:
    """Raise Unwritable where Python's parse of the suite file changed a number's value."""
    if isinstance(raw, RawFloat):
        if not isinstance(value, float) or not math.isfinite(value):
            raise Unwritable(f"number {raw} is not a finite double")
        try:
            if Decimal(repr(value)) != Decimal(str(raw)):
                raise Unwritable(f"number {raw} would be written as {value!r} (another value)")
        except InvalidOperation:  # pragma: no cover
            raise Unwritable(f"number {raw} cannot be compared") from None
    elif isinstance(raw, dict):
        for k, v in raw.items():
            _check_faithful(value[k], v)
    elif isinstance(raw, list):
        for v, r in zip(value, raw):
            _check_faithful(v, r)


def max_whitespace_run(text: bytes) -> int:
    """The longest run of JSON whitespace outside strings."""
    best = run = 0
    in_string = escaped = False
    for b in text:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                in_string = False
            continue
        if b in (0x20, 0x09, 0x0A, 0x0D):
            run += 1
            best = max(best, run)
            continue
        run = 0
        in_string = b == 0x22
    return best


def spellings(data: Any, raw: Any = None) -> list[tuple[str, bytes]]:
    """The JSON texts of ``data``: json.dumps's default ("spaced"), compact, compact with every
    non-ASCII character escaped ("ascii"), and indented by 2 (when within ``max_whitespace``)."""
    if raw is not None:
        _check_faithful(data, raw)
    out: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    forms = (("spaced", None, False, None), ("compact", (",", ":"), False, None),
             ("ascii", (",", ":"), True, None), ("indented", None, False, 2))
    for name, seps, ascii_only, indent in forms:
        try:
            text = json.dumps(data, ensure_ascii=ascii_only, separators=seps, indent=indent,
                              allow_nan=False).encode("utf-8")
        except ValueError as e:
            raise Unwritable(f"not JSON text: {e}") from None
        except UnicodeEncodeError:
            if not ascii_only:
                continue  # a lone surrogate: only its \\u escape is writable, the ascii form below
            raise  # pragma: no cover
        if indent and max_whitespace_run(text) > OPTIONS.max_whitespace:
            continue  # deeper than the whitespace bound allows: a documented limit, not a test
        if text not in seen:
            seen.add(text)
            out.append((name, text))
    if not out:  # pragma: no cover
        raise Unwritable("no spelling could be encoded")
    return out


# --------------------------------------------------------------------------- checks

def byte_check(grammar: CompiledGrammar, text: bytes) -> tuple[bool, str]:
    """(accepted as a complete value, where it stopped)."""
    auto = grammar.automaton
    sid = auto.start
    for i, b in enumerate(text):
        sid = auto.step(sid, b)
        if sid < 0:
            return False, f"refused at byte {i} (after {text[max(0, i - 16):i]!r}, byte {bytes([b])!r})"
    if auto.is_accepting(sid):
        return True, "accepted"
    return False, "not accepting at the end"


def _mask_allows(matcher: Matcher, token_id: int) -> bool:
    packed = matcher.packed_mask()
    word = int(packed[token_id >> 5]) & 0xFFFFFFFF
    return bool((word >> (token_id & 31)) & 1)


@dataclass
class TokenLevel:
    """The real tokenizer and its exact vocabulary."""

    name: str
    vocab: TokenVocabulary
    tokenizer: Any

    @classmethod
    def load(cls, name: str) -> "TokenLevel":
        import tokenizers

        path = TOKENIZERS / f"{name}.tokenizer.json.xz"
        tok = tokenizers.Tokenizer.from_str(lzma.open(path).read().decode("utf-8"))
        return cls(name, TokenVocabulary.from_file(path), tok)

    def encode(self, text: bytes) -> list[int]:
        ids = self.tokenizer.encode(text.decode("utf-8"), add_special_tokens=False).ids
        if self.vocab.decode_bytes(ids) != text:
            raise Unwritable(f"the {self.name} tokenizer does not round-trip this text")
        return ids


def token_check(grammar: CompiledGrammar, ids: list[int], valid: bool, check_masks: bool) -> tuple[str, str]:
    """Feed ``ids`` to a Matcher.

    Returns ``(verdict, where)``: verdict ``"accepted"`` (all taken, accepting, end token taken),
    ``"refused"`` (refused at some token or incomplete), or a mask inconsistency
    (``MASK_REJECTED_VALID``/``MASK_UNSOUND``).
    """
    m = Matcher(grammar)
    end_ids = sorted(int(i) for i in grammar.index.end_ids)
    for i, tid in enumerate(ids):
        allowed = _mask_allows(m, tid) if (check_masks and valid) else None
        ok = m.try_accept(tid)
        if check_masks and not ok and not valid:
            allowed = _mask_allows(m, tid)
        if allowed is not None and allowed != ok:
            kind = MASK_UNSOUND if allowed else MASK_REJECTED_VALID
            what = "allows" if allowed else "forbids"
            return kind, (f"the mask {what} token {i} (id {tid}, {grammar.vocab.token_bytes[tid]!r}) "
                          f"but the automaton {'refuses' if allowed else 'accepts'} it")
        if not ok:
            return "refused", f"refused at token {i} (id {tid}, {grammar.vocab.token_bytes[tid]!r})"
    if not m.is_accepting():
        if check_masks and end_ids and _mask_allows(m, end_ids[0]):
            return MASK_UNSOUND, "not accepting after the last token, yet the mask allows the end token"
        return "refused", "not accepting after the last token"
    if check_masks and valid and end_ids and not _mask_allows(m, end_ids[0]):
        return MASK_REJECTED_VALID, "accepting, but the mask forbids the end token"
    if end_ids and not m.try_accept(end_ids[0]):
        return "refused", "the end token is refused although accepting"  # pragma: no cover
    return "accepted", "accepted"


# --------------------------------------------------------------------------- the run

@dataclass
class Run:
    """Everything a harness run produced."""

    drafts: list[str]
    optional: bool
    token_level: str | None
    check_masks: bool
    invalid_sample: int
    groups: list[GroupResult] = field(default_factory=list)
    seconds: float = 0.0
    setup_seconds: float = 0.0

    @property
    def tests(self) -> list[TestResult]:
        return [t for g in self.groups for t in g.tests]

    def bugs(self) -> list[TestResult]:
        return [t for t in self.tests if t.bug]


def _worse(a: str, b: str) -> str:
    return a if SEVERITY.index(a) <= SEVERITY.index(b) else b


def token_sampled(key: str, valid: bool, invalid_sample: int) -> bool:
    """Valid instances always; invalid ones when ``crc32(key) % invalid_sample == 0`` (1 = all)."""
    return valid or invalid_sample <= 1 or zlib.crc32(key.encode()) % invalid_sample == 0


def _run_test(t: TestResult, raw: Any, grammar: CompiledGrammar, level: TokenLevel | None,
              check_masks: bool, invalid_sample: int) -> None:
    try:
        texts = spellings(t.data, raw)
    except Unwritable as e:
        t.outcome, t.detail = SKIPPED, str(e)
        return
    outcome, details = PASS, []

    def note(kind: str, spelling: str, text: bytes, where: str) -> None:
        nonlocal outcome
        details.append(f"{kind} [{spelling}] {where}")
        if _worse(kind, outcome) == kind and kind != outcome:
            outcome = kind
            t.spelling, t.text = spelling, text

    do_tokens = level is not None and token_sampled(t.key, t.valid, invalid_sample)
    for spelling, text in texts:
        accepted, where = byte_check(grammar, text)
        if accepted != t.valid:
            note(ACCEPTED_INVALID if accepted else REJECTED_VALID, spelling, text, "byte level: " + where)
        if not do_tokens:
            continue
        try:
            ids = level.encode(text)
        except Unwritable as e:
            details.append(f"token level skipped [{spelling}]: {e}")
            continue
        t.token_checked = True
        verdict, where = token_check(grammar, ids, t.valid, check_masks)
        if verdict in (MASK_REJECTED_VALID, MASK_UNSOUND):
            note(verdict, spelling, text, f"token level: {where}")
            continue
        tok_accepted = verdict == "accepted"
        if tok_accepted != accepted:  # the two levels disagree: an engine inconsistency
            note(TOKEN_ACCEPTED_INVALID if tok_accepted else TOKEN_REJECTED_VALID, spelling, text,
                 f"token level: {where}; byte level: {'accepted' if accepted else 'refused'}")
    t.outcome = outcome
    t.detail = "; ".join(details)


def run(drafts: Iterable[str] = tuple(DRAFTS), *, optional: bool = True, tokenizer: str | None = "llama3",
        check_masks: bool = True, invalid_sample: int = 1, progress: bool = False) -> Run:
    """Run the suite; ``tokenizer=None`` runs the byte level only (with a small vocabulary)."""
    t0 = time.perf_counter()
    level = TokenLevel.load(tokenizer) if tokenizer else None
    vocab = level.vocab if level else TokenVocabulary.from_file(MINI_LLAMA3)
    TokenIndex.for_vocabulary(vocab)  # per-vocabulary work, so that group timings are the groups' own
    result = Run(list(drafts), optional, tokenizer, check_masks and level is not None, invalid_sample)
    result.setup_seconds = time.perf_counter() - t0
    for draft in result.drafts:
        draft_dir, spec, add_schema = DRAFTS[draft]
        registry = load_registry(spec)
        for kind, rel, path in suite_files(draft_dir, optional):
            text = path.read_text(encoding="utf-8")
            groups, raw_groups = json.loads(text), json.loads(text, parse_float=RawFloat)
            for gi, (group, raw_group) in enumerate(zip(groups, raw_groups)):
                g = GroupResult(f"{draft_dir}/{rel}/{gi}", draft_dir, rel, kind, gi, group["description"],
                                prepare_schema(group["schema"], add_schema))
                _run_group(g, group, raw_group, vocab, registry, level, result.check_masks, invalid_sample)
                result.groups.append(g)
            if progress:
                print(f"  {draft_dir}/{rel}", file=sys.stderr)
    result.seconds = time.perf_counter() - t0
    return result


def _run_group(g: GroupResult, group: dict, raw_group: dict, vocab: TokenVocabulary,
               registry: referencing.Registry, level: TokenLevel | None, check_masks: bool,
               invalid_sample: int) -> None:
    for ti, test in enumerate(group["tests"]):
        g.tests.append(TestResult(f"{g.key}/{ti}", g, ti, test["description"], bool(test["valid"]), test["data"]))
    t0 = time.perf_counter()
    grammar = None
    try:
        options = FORMAT_OPTIONS if g.kind == KIND_OPTIONAL else OPTIONS
        grammar = compile_json_schema(g.schema, vocab, options, registry=registry)
        g.compiled = True
    except EnforcerError as e:
        g.error, g.error_type = str(e), type(e).__name__
    except Exception as e:  # a crash: an engine bug in its own right
        g.error, g.error_type = f"{type(e).__name__}: {str(e)[:300]}", type(e).__name__
        g.crashed = True
    g.compile_s = time.perf_counter() - t0
    if grammar is None:
        crashed = g.crashed
        empty = "admits no value" in (g.error or "")
        for t in g.tests:
            if crashed:
                t.outcome, t.detail = ERROR, f"compile raised {g.error}"
            elif empty and t.valid:  # the compiler says no value fits, but the suite has one
                t.outcome, t.detail = REJECTED_VALID, f"compile: {g.error}"
            else:
                t.outcome, t.detail = UNSUPPORTED, g.error or ""
        return
    for t, raw_test in zip(g.tests, raw_group["tests"]):
        try:
            _run_test(t, raw_test["data"], grammar, level, check_masks, invalid_sample)
        except Exception as e:  # the engine raised while walking or masking
            t.outcome, t.detail = ERROR, f"{type(e).__name__}: {str(e)[:300]}"
    g.run_s = time.perf_counter() - t0 - g.compile_s


# --------------------------------------------------------------------------- figures

def _counter(tests: Iterable[TestResult]) -> dict[str, int]:
    c = collections.Counter(t.outcome for t in tests)
    return {k: c[k] for k in SEVERITY if c[k]}


@dataclass
class Figures:
    """Counts for one set of groups (a file, a draft's required tests, ...)."""

    groups: int = 0
    compiled: int = 0
    tests: int = 0
    passing: int = 0
    valid: int = 0
    valid_accepted: int = 0
    invalid: int = 0
    invalid_rejected: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, groups: Iterable[GroupResult]) -> "Figures":
        f = cls()
        tests: list[TestResult] = []
        for g in groups:
            f.groups += 1
            f.compiled += g.compiled
            tests += g.tests
        f.tests = len(tests)
        f.passing = sum(t.outcome == PASS for t in tests)
        f.valid = sum(t.valid for t in tests)
        f.valid_accepted = sum(t.valid and t.outcome == PASS for t in tests)
        f.invalid = f.tests - f.valid
        f.invalid_rejected = sum(not t.valid and t.outcome == PASS for t in tests)
        f.outcomes = _counter(tests)
        return f

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summary(result: Run) -> dict[str, Any]:
    """Per draft and kind: the figures; plus the engine bug keys."""
    out: dict[str, Any] = {}
    for draft in result.drafts:
        draft_dir = DRAFTS[draft][0]
        per: dict[str, Any] = {}
        for kind in (KIND_REQUIRED, KIND_OPTIONAL):
            groups = [g for g in result.groups if g.draft == draft_dir and g.kind == kind]
            if groups:
                per[kind] = Figures.of(groups).as_dict()
        out[draft_dir] = per
    return out


def unsupported_reasons(result: Run, kind: str = KIND_REQUIRED) -> dict[str, dict[str, list[int]]]:
    """Per draft: compile-error reason (keyword or message class) -> [groups, tests]."""
    out: dict[str, dict[str, list[int]]] = {}
    for g in result.groups:
        if g.compiled or g.kind != kind:
            continue
        row = out.setdefault(g.draft, {}).setdefault(_reason(g), [0, 0])
        row[0] += 1
        row[1] += len(g.tests)
    return {d: dict(sorted(c.items(), key=lambda kv: (-kv[1][1], kv[0]))) for d, c in out.items()}


def _reason(g: GroupResult) -> str:
    msg = g.error or ""
    if g.crashed:
        return f"engine crash ({g.error_type})"
    if msg.startswith("keyword '"):
        return f"keyword {msg.split(chr(39))[1]} not supported"
    for needle, label in (
        ("admits no value", "schema admits no value (refused at compile time by design)"),
        ("format '", "format not supported: " + msg.split("'")[1] if "format '" in msg else ""),
        ("may overlap", "oneOf branches not provably disjoint"),
        ("anyOf together with oneOf", "anyOf together with oneOf"),
        ("merging a $ref target from another document", "$ref with siblings/allOf into another document"),
        ("cannot resolve $ref", "$ref not resolvable (nested $id base URI / unknown document)"),
        ("multipleOf", "multipleOf beyond 10,000 remainder states"),
        ("cannot be merged exactly", "allOf with keywords that cannot be merged"),
        ("combining", "pattern/format/length combined on one string"),
    ):
        if needle in msg:
            return label
    return msg[:80]


# --------------------------------------------------------------------------- baseline

def to_baseline(result: Run) -> dict[str, Any]:
    """A deterministic record of every test's outcome (no timings), bugs listed first."""
    tests: dict[str, Any] = {}
    for t in result.tests:
        entry: dict[str, Any] = {"test": t.description, "valid": t.valid, "outcome": t.outcome}
        if t.bug:
            entry["engine_bug"] = True
            entry["detail"] = t.detail
            if t.text is not None:
                entry["text"] = t.text.decode("utf-8", "backslashreplace")
        elif t.outcome == SKIPPED:
            entry["detail"] = t.detail
        elif t.group.kind == KIND_OPTIONAL and t.outcome in BUGS:
            entry["tolerated"] = "sound format subset refuses this valid string"
        tests[t.key] = entry
    groups = {g.key: {"description": g.description, "compiled": g.compiled,
                      **({"error": g.error} if g.error else {})} for g in result.groups}
    return {
        "about": "JSON-Schema-Test-Suite outcomes per test; written by "
                 "`python -m tests.conformance.harness --write-baseline`. tests/conformance/test_conformance.py "
                 "fails when a test marked pass here stops passing, or when any engine_bug entry exists.",
        "options": {k: getattr(OPTIONS, k) for k in OPTIONS.__dataclass_fields__},
        "levels": {"byte": True, "token": result.token_level, "masks": result.check_masks,
                   "invalid_token_sample": result.invalid_sample},
        "summary": summary(result),
        "engine_bugs": {t.key: t.outcome for t in result.bugs()},
        "groups": groups,
        "tests": tests,
    }


def dump_baseline(data: dict[str, Any]) -> str:
    """JSON with one line per group and per test, so that a re-written baseline diffs line by line."""
    parts = []
    for key, value in data.items():
        if key in ("engine_bugs", "groups", "tests") and value:
            rows = ",\n".join(f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
                              for k, v in value.items())
            parts.append(f" {json.dumps(key)}: {{\n{rows}\n }}")
        else:
            body = json.dumps(value, indent=1, ensure_ascii=False).replace("\n", "\n ")
            parts.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_baseline(result: Run, path: Path = BASELINE) -> None:
    text = dump_baseline(to_baseline(result))
    assert json.loads(text) == to_baseline(result)
    path.write_text(text, encoding="utf-8")


def load_baseline(path: Path = BASELINE) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dataclass
class Ratchet:
    """How a run compares to the baseline."""

    regressions: list[str] = field(default_factory=list)  # "key: baseline pass, now X (detail)"
    new_passes: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)   # key present but descriptions differ / missing


def compare(result: Run, baseline: dict[str, Any]) -> Ratchet:
    """Every baseline pass (in the drafts/kinds this run covers) must still pass."""
    r = Ratchet()
    now = {t.key: t for t in result.tests}
    covered = {(g.draft, g.kind) for g in result.groups}
    for key, entry in baseline["tests"].items():
        draft = key.split("/", 1)[0]
        kind = KIND_OPTIONAL if "/optional/" in key else KIND_REQUIRED
        if (draft, kind) not in covered:
            continue
        t = now.get(key)
        group = baseline["groups"].get(key.rsplit("/", 1)[0], {}).get("description")
        if t is None or t.description != entry["test"] or t.group.description != group:
            r.mismatched.append(f"{key}: not found with the descriptions {group!r} / {entry['test']!r}")
            continue
        if entry["outcome"] == PASS and t.outcome != PASS:
            r.regressions.append(f"{key} ({group} / {entry['test']}): baseline pass, now "
                                 f"{t.outcome}: {t.detail or t.group.error}")
        elif entry["outcome"] != PASS and t.outcome == PASS:
            r.new_passes.append(key)
    return r


# --------------------------------------------------------------------------- reports

def bug_report(t: TestResult) -> str:
    """A reproducer: schema, instance text, option set and what went wrong."""
    lines = [f"{t.key}  [{t.outcome}]",
             f"  group: {t.group.description}", f"  test:  {t.description} (valid={t.valid})",
             f"  schema: {json.dumps(t.group.schema, ensure_ascii=False)[:600]}"]
    if t.text is not None:
        lines.append(f"  text [{t.spelling}]: {t.text.decode('utf-8', 'backslashreplace')[:300]}")
    lines.append(f"  detail: {t.detail[:600]}")
    return "\n".join(lines)


def _pct(a: int, b: int) -> str:
    return f"{a}/{b}" if b else "–"


def markdown(result: Run) -> str:
    """The per-file tables of docs/conformance.md."""
    out: list[str] = []
    for draft in result.drafts:
        draft_dir = DRAFTS[draft][0]
        for kind in (KIND_REQUIRED, KIND_OPTIONAL):
            groups = [g for g in result.groups if g.draft == draft_dir and g.kind == kind]
            if not groups:
                continue
            out.append(f"### {draft_dir}, {'required tests' if kind == KIND_REQUIRED else 'optional format tests'}\n")
            optional = kind == KIND_OPTIONAL
            out.append("| file | groups compiled | valid accepted | invalid rejected | tests passing | engine bugs |"
                       + (" valid refused (sound subset) |" if optional else ""))
            out.append("|---|---:|---:|---:|---:|---:|" + ("---:|" if optional else ""))
            files = list(dict.fromkeys(g.file for g in groups))
            for name in files + [None]:
                sel = [g for g in groups if name is None or g.file == name]
                f = Figures.of(sel)
                tests = [t for g in sel for t in g.tests]
                bugs = sum(t.bug for t in tests)
                label = f"**all ({len(files)} files)**" if name is None else f"`{name}`"
                row = [label, _pct(f.compiled, f.groups), _pct(f.valid_accepted, f.valid),
                       _pct(f.invalid_rejected, f.invalid), _pct(f.passing, f.tests), str(bugs)]
                if optional:
                    row.append(str(sum(t.outcome in BUGS and not t.bug for t in tests)))
                if name is None:
                    row = [f"**{c}**" if i else c for i, c in enumerate(row)]
                out.append("| " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out)


def text_report(result: Run, ratchet: Ratchet | None = None, slow_s: float = 0.5) -> str:
    lines = [f"JSON-Schema-Test-Suite: drafts {', '.join(result.drafts)}; token level: "
             f"{result.token_level or 'off'}{' + masks' if result.check_masks else ''}"
             f"{f', invalid instances sampled 1/{result.invalid_sample}' if result.invalid_sample > 1 else ''}; "
             f"{result.seconds:.1f} s ({result.setup_seconds:.1f} s setup)", f"options: {OPTIONS}"]
    if result.token_level:
        ran = [t for t in result.tests if t.group.compiled and t.outcome != SKIPPED]
        lines.append(f"token level checked {sum(t.token_checked for t in ran)} of {len(ran)} instances "
                     "of compiled groups")
    for draft_dir, per in summary(result).items():
        for kind, f in per.items():
            lines.append(f"  {draft_dir} {kind}: groups compiled {f['compiled']}/{f['groups']}, tests passing "
                         f"{f['passing']}/{f['tests']} (valid accepted {f['valid_accepted']}/{f['valid']}, invalid "
                         f"rejected {f['invalid_rejected']}/{f['invalid']}); {f['outcomes']}")
    slow = sorted((g for g in result.groups if g.compile_s + g.run_s > slow_s), key=lambda g: -(g.compile_s + g.run_s))
    for g in slow[:10]:
        lines.append(f"  slow group {g.key}: compile {g.compile_s:.2f} s, tests {g.run_s:.2f} s ({g.description})")
    bugs = result.bugs()
    lines.append(f"engine bugs: {len(bugs)} tests")
    for t in bugs:
        lines.append(bug_report(t))
    tolerated = [t for t in result.tests if t.outcome in BUGS and not t.bug]
    if tolerated:
        lines.append(f"optional format tests, valid strings refused by a sound subset (tolerated): {len(tolerated)}")
    if ratchet is not None:
        lines.append(f"ratchet: {len(ratchet.regressions)} regressions, {len(ratchet.new_passes)} new passes, "
                     f"{len(ratchet.mismatched)} mismatched keys")
        lines += ["  REGRESSION " + s for s in ratchet.regressions]
        lines += ["  MISMATCH " + s for s in ratchet.mismatched[:20]]
        if ratchet.new_passes:
            lines.append("  new passes beyond the baseline: re-write it with "
                         "`python -m tests.conformance.harness --write-baseline`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.harness", description=__doc__.split("\n")[0])
    ap.add_argument("--draft", choices=[*DRAFTS, "all"], default="all")
    # byte-level BPE tokenizers only: SentencePiece ones (llama2, gemma3) prepend a space to a text
    # encoded on its own, so their token ids would not spell the instance
    ap.add_argument("--tokenizer", choices=["llama3", "qwen3", "deepseek_v3", "none"], default="llama3")
    ap.add_argument("--no-masks", action="store_true", help="token level without consulting the token masks")
    ap.add_argument("--no-optional", action="store_true", help="skip optional/format")
    ap.add_argument("--invalid-sample", type=int, default=1, metavar="N",
                    help="token level for 1/N of the invalid instances (deterministic); valid ones always")
    ap.add_argument("--write-baseline", action="store_true", help=f"write {BASELINE.relative_to(REPO)}")
    ap.add_argument("--json", action="store_true", help="print the summary, bugs and ratchet as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the per-file tables for docs/conformance.md")
    args = ap.parse_args(argv)
    if not SUITE.is_dir():
        print(f"the test suite is not at {SUITE}", file=sys.stderr)
        return 2
    drafts = list(DRAFTS) if args.draft == "all" else [args.draft]
    tokenizer = None if args.tokenizer == "none" else args.tokenizer
    result = run(drafts, optional=not args.no_optional, tokenizer=tokenizer, check_masks=not args.no_masks,
                 invalid_sample=args.invalid_sample, progress=not args.json)
    baseline = load_baseline()
    ratchet = compare(result, baseline) if baseline and not args.write_baseline else None
    if args.write_baseline:
        write_baseline(result)
        print(f"wrote {BASELINE}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "seconds": round(result.seconds, 2), "summary": summary(result),
            "token_checked": sum(t.token_checked for t in result.tests),
            "unsupported": unsupported_reasons(result),
            "bugs": [{"key": t.key, "outcome": t.outcome, "group": t.group.description, "test": t.description,
                      "valid": t.valid, "schema": t.group.schema,
                      "text": t.text.decode("utf-8", "backslashreplace") if t.text is not None else None,
                      "detail": t.detail} for t in result.bugs()],
            "ratchet": ratchet.__dict__ if ratchet else None,
        }, indent=1, ensure_ascii=False))
    elif args.markdown:
        print(markdown(result))
        for d, reasons in unsupported_reasons(result).items():
            print(f"### not compiled, {d} required tests\n\n| reason | groups | tests |\n|---|---:|---:|")
            print("\n".join(f"| {r} | {g} | {n} |" for r, (g, n) in reasons.items()) + "\n")
    else:
        print(text_report(result, ratchet))
    failing = bool(result.bugs()) or bool(ratchet and (ratchet.regressions or ratchet.mismatched))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
