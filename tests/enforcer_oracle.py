"""Shared helpers for the oracle tests (mask exactness, generation, matcher).

Not a test module: imported by ``test_mask_exactness.py``, ``test_generation_oracle.py``,
``test_schema_errors.py`` and ``test_matcher.py``.

* vocabularies: :func:`vocab_by_name` (``"mini"`` is the packaged default vocabulary and
  always exists; the real ones come from ``../shared/tokenizers`` and skip when absent);
* the brute-force mask reference: :func:`reference_text_allowed` walks every text token
  byte by byte through the automaton's transition table (vectorised across tokens only),
  and :func:`literal_text_allowed` is the same with ``automaton.walk`` one token at a time;
* random walks and seeded random-logit sampling over the fast mask.
"""

from __future__ import annotations

import functools
import json
import lzma
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from data_sets import require_file

from exl2_enforcer.engine.automaton import UNKNOWN
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary, default_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
SCHEMAS = ROOT / "tests" / "schemas"
MINI_TOKENIZER_FILE = ROOT / "exl2_enforcer" / "data" / "mini_llama3.tokenizer.json.xz"


# ----------------------------------------------------------------------------- vocabularies


def shared_file(name: str) -> Path:
    return SHARED / f"{name}.tokenizer.json.xz"


def require_shared(name: str) -> Path:
    path = shared_file(name)
    return require_file(path, "real tokenizer (../shared/tokenizers)")


@functools.cache
def _load_shared_vocab(name: str) -> TokenVocabulary:
    return TokenVocabulary.from_file(shared_file(name))


def vocab_by_name(name: str) -> TokenVocabulary:
    """``"mini"`` = the packaged default vocabulary; else a tokenizer of ../shared (or skip)."""
    if name == "mini":
        return default_vocabulary()
    require_shared(name)
    return _load_shared_vocab(name)


@functools.cache
def _hf_tokenizer(name: str):
    import tokenizers

    path = MINI_TOKENIZER_FILE if name == "mini" else shared_file(name)
    return tokenizers.Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode("utf-8"))


def hf_tokenizer(name: str):
    if name != "mini":
        require_shared(name)
    return _hf_tokenizer(name)


def encode(name: str, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(hf_tokenizer(name).encode(text, add_special_tokens=False).ids)


# ----------------------------------------------------------------------------- schema files


def load_schema_file(path: Path) -> tuple[Any, list[Any], list[Any]]:
    """``(schema, valid, invalid)``; bare schema files have no examples."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "schema" in data and set(data) <= {"schema", "valid", "invalid", "comment"}:
        return data["schema"], list(data.get("valid", [])), list(data.get("invalid", []))
    return data, [], []


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.json"))


# ----------------------------------------------------------------------------- token tables


@dataclass
class TokenTable:
    """Per-vocabulary arrays for the reference: text tokens as a padded byte matrix."""

    vocab: TokenVocabulary
    text_ids: np.ndarray  # ids with non-empty bytes that are neither special nor markup
    mat: np.ndarray  # (n_text, maxlen) uint8, zero padded
    lens: np.ndarray  # (n_text,) int64
    special: np.ndarray  # bool per id < n_ids
    ends: np.ndarray  # sorted end ids
    token_len: np.ndarray  # byte length per id (0 when no text)


_TABLES: dict[int, TokenTable] = {}


def token_table(vocab: TokenVocabulary) -> TokenTable:
    got = _TABLES.get(id(vocab))
    if got is not None and got.vocab is vocab:
        return got
    tb = vocab.token_bytes
    # markup ids (chat control such as Gemma's <start_of_turn>) keep their bytes but are never
    # constrained text: the engine never allows them, so neither does the reference
    hidden = vocab.special_ids | vocab.markup_ids
    text = [i for i, b in enumerate(tb) if b and i not in hidden]
    lens = np.array([len(tb[i]) for i in text], dtype=np.int64)
    mat = np.zeros((len(text), int(lens.max())), dtype=np.uint8)
    for row, i in enumerate(text):
        b = tb[i]
        mat[row, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    special = np.zeros(vocab.n_ids, dtype=bool)
    special[[i for i in vocab.special_ids if i < vocab.n_ids]] = True
    token_len = np.zeros(vocab.n_ids, dtype=np.int64)
    token_len[text] = lens
    got = TokenTable(vocab, np.array(text, dtype=np.int64), mat, lens, special,
                     np.array(sorted(vocab.end_ids), dtype=np.int64), token_len)
    _TABLES[id(vocab)] = got
    return got


def reference_text_allowed(automaton, table: TokenTable, sid: int) -> np.ndarray:
    """Bool per row of ``table.text_ids``: walking the token's bytes from ``sid`` stays alive.

    The plain byte-by-byte walk (same transitions as ``automaton.step``), vectorised
    over tokens; no trie, no plain-content shortcut.
    """
    n = table.text_ids.shape[0]
    states = np.full(n, sid, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    cls_of = automaton.class_of_byte
    for d in range(table.mat.shape[1]):
        sel = np.flatnonzero(alive & (table.lens > d))
        if sel.size == 0:
            break
        cls = cls_of[table.mat[sel, d]]
        cur = states[sel]
        nxt = automaton.table[cur, cls]
        unknown = nxt == UNKNOWN
        if unknown.any():
            automaton.ensure_rows(np.unique(cur[unknown]).tolist())
            nxt = automaton.table[cur, cls]
        assert not (nxt == UNKNOWN).any()
        states[sel] = nxt
        alive[sel] = nxt >= 0
    return alive


def literal_text_allowed(automaton, table: TokenTable, sid: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Like :func:`reference_text_allowed` but with ``automaton.walk`` token by token."""
    tb = table.vocab.token_bytes
    rows = np.arange(table.text_ids.shape[0]) if rows is None else rows
    return np.array([automaton.walk(sid, tb[int(table.text_ids[r])]) >= 0 for r in rows], dtype=bool)


def reference_allowed_ids(g, table: TokenTable, sid: int) -> np.ndarray:
    """Sorted allowed ids by brute force: text tokens that walk, plus end ids if accepting."""
    ok = table.text_ids[reference_text_allowed(g.automaton, table, sid)]
    if g.automaton.is_accepting(sid):
        ok = np.union1d(ok, table.ends)
    return np.sort(ok)


def unpack_bits(words: np.ndarray, width: int) -> np.ndarray:
    """Ids whose bits are set in an int32 bitmask, below ``width`` only."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:width])


def bitmask_ids(m: Matcher, width: int) -> np.ndarray:
    out = np.zeros((width + 31) // 32, dtype=np.int32)
    m.fill_bitmask(out, width)
    return unpack_bits(out, (width + 31) // 32 * 32)


# ----------------------------------------------------------------------------- sampling

STRUCTURAL = frozenset(b'"}],:')


def nonplain_ids(table: TokenTable) -> np.ndarray:
    """Bool per id: a text token that is not plain string content (has JSON syntax, escapes or non-ASCII)."""
    got = getattr(table, "_nonplain", None)
    if got is None:
        got = np.zeros(table.vocab.n_ids, dtype=bool)
        for i in table.text_ids:
            b = table.vocab.token_bytes[int(i)]
            if any(c in b'"\\{}[],:' or c < 0x20 or c >= 0x80 for c in b):
                got[int(i)] = True
        table._nonplain = got  # type: ignore[attr-defined]
    return got


def structural_ids(table: TokenTable) -> np.ndarray:
    """Bool per id: the token's bytes contain a closing quote/bracket/brace/comma/colon."""
    got = getattr(table, "_structural", None)
    if got is None:
        got = np.zeros(table.vocab.n_ids, dtype=bool)
        for i in table.text_ids:
            b = table.vocab.token_bytes[int(i)]
            if any(c in STRUCTURAL for c in b):
                got[int(i)] = True
        table._structural = got  # type: ignore[attr-defined]
    return got


def sample_token(rng: np.random.Generator, allowed: np.ndarray, table: TokenTable, *, step: int,
                 budget: int, temperature: float) -> int:
    """Gumbel-max over random logits of the allowed ids.

    Once half the budget is used, end ids get a big bonus and structural tokens
    (containing ``" } ] , :``) a growing one, so most generations finish.
    """
    logits = rng.standard_normal(allowed.shape[0]) * temperature
    if step >= budget // 2:
        frac = (step - budget // 2) / max(1, budget - budget // 2)
        logits = logits + structural_ids(table)[np.minimum(allowed, table.vocab.n_ids - 1)] * (4.0 + 20.0 * frac)
        logits = logits + np.isin(allowed, table.ends) * 100.0
    logits = logits + rng.gumbel(size=allowed.shape[0])
    return int(allowed[int(np.argmax(logits))])


def shortest_completion(automaton, sid: int, max_states: int = 20000) -> bytes | None:
    """Bytes of a shortest path from DFA state ``sid`` to an accepting state (BFS over byte classes)."""
    from collections import deque

    if automaton.is_accepting(sid):
        return b""
    prev: dict[int, tuple[int, int] | None] = {sid: None}
    todo = deque([sid])
    while todo and len(prev) < max_states:
        s = todo.popleft()
        automaton.ensure_rows([s])
        row = automaton.table[s].tolist()
        for c, t in enumerate(row):
            if t < 0 or t in prev:
                continue
            prev[t] = (s, automaton.class_rep[c])
            if automaton.is_accepting(t):
                out = []
                while prev[t] is not None:
                    t, b = prev[t]
                    out.append(b)
                return bytes(reversed(out))
            todo.append(t)
    return None


def bytes_to_id(table: TokenTable) -> dict[bytes, int]:
    got = getattr(table, "_by_bytes", None)
    if got is None:
        got = {}
        for i in table.text_ids:
            got.setdefault(table.vocab.token_bytes[int(i)], int(i))
        table._by_bytes = got  # type: ignore[attr-defined]
    return got


def completion_token(m: Matcher, allowed: np.ndarray, table: TokenTable) -> int | None:
    """An allowed token that is the longest prefix of a shortest completion (or an end id)."""
    path = shortest_completion(m.grammar.automaton, m.state)
    if path is None:
        return None
    if path == b"":
        ends = allowed[np.isin(allowed, table.ends)]
        return int(ends[0]) if ends.size else None
    lookup = bytes_to_id(table)
    for k in range(min(len(path), 64), 0, -1):
        t = lookup.get(path[:k])
        if t is not None:
            pos = int(np.searchsorted(allowed, t))  # allowed ids are sorted
            if pos < allowed.shape[0] and int(allowed[pos]) == t:
                return t
    return None


@dataclass
class Generation:
    ids: list[int]
    text: bytes
    finished: bool


def generate(g, rng: np.random.Generator, *, budget: int = 400, temperature: float = 1.0,
             end_bias_always: bool = False) -> Generation:
    """Sample token by token from the fast mask until an end id or the budget.

    First half of the budget: pure random logits.  Second half: a growing share of
    steps take the token that heads for the nearest accepting state (BFS in the
    automaton); the other steps stay random with a bias for end and structural tokens.
    """
    table = token_table(g.vocab)
    m = Matcher(g)
    ids: list[int] = []
    for step in range(budget):
        allowed = m.allowed_ids()
        assert allowed.size > 0, f"empty mask in state {m.state} after {ids}"
        eff = budget if end_bias_always else step
        tid = None
        if eff >= budget // 2 and rng.random() < 0.3 + 0.7 * (eff - budget // 2) / max(1, budget - budget // 2):
            tid = completion_token(m, allowed, table)
        if tid is None:
            tid = sample_token(rng, allowed, table, step=eff, budget=budget, temperature=temperature)
        if tid in g.vocab.end_ids:
            assert m.is_accepting()
            m.accept_token(tid)
            return Generation(ids, g.vocab.decode_bytes(ids), True)
        m.accept_token(tid)
        ids.append(tid)
    return Generation(ids, g.vocab.decode_bytes(ids), False)


# ----------------------------------------------------------------------------- validation

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?P<domain>.+)$")


def format_checker(draft7: bool = False):
    """The draft's own format checker plus stricter hostname/email checks (no fqdn package here).

    ``jsonschema.FormatChecker()`` without arguments mixes all drafts, and its ``time``
    is draft 3's ``%H:%M:%S`` (which refuses RFC 3339 ``23:59:59Z``); use the draft's one.
    """
    import jsonschema
    from jsonschema import FormatChecker

    base = (jsonschema.Draft7Validator if draft7 else jsonschema.Draft202012Validator).FORMAT_CHECKER
    # (drafts 4 and 6 share draft 7's format semantics for every format the engine supports)
    fc = FormatChecker(formats=())
    fc.checkers = dict(base.checkers)

    @fc.checks("hostname")
    def _hostname(value: object) -> bool:
        return not isinstance(value, str) or bool(_HOSTNAME.match(value))

    @fc.checks("email")
    def _email(value: object) -> bool:
        if not isinstance(value, str):
            return True
        m = _EMAIL.match(value)
        return (bool(m) and len(value) <= 254 and len(value.split("@")[0]) <= 64
                and bool(_HOSTNAME.match(m.group("domain"))))

    return fc


def validator_for(schema: Any):
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    draft7 = cls is not jsonschema.Draft202012Validator
    return cls(schema, format_checker=format_checker(draft7))


def assert_values_match_jsonschema(g, schema: Any, values: list[Any], label: Any = None) -> None:
    """Each of ``values`` (as ``json.dumps`` writes it) is a complete value of ``g`` exactly when
    ``jsonschema`` says it is valid; the sample must hold both valid and invalid values."""
    check = validator_for(schema)
    seen = set()
    for value in values:
        ok = check.is_valid(value)
        seen.add(ok)
        assert g.automaton.matches(json.dumps(value).encode()) == ok, (label, value)
    assert seen == {True, False}, "the sample must hold valid and invalid values"


def finished_values(g, rng: np.random.Generator, runs: int, budget: int) -> list[Any]:
    """The JSON values of the generations from ``rng`` that finished within ``budget``, out of ``runs``."""
    values = []
    for _ in range(runs):
        gen = generate(g, rng, budget=budget)
        if gen.finished:
            values.append(json.loads(gen.text))
    return values
