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
import pytest

from exl2_enforcer.automaton import UNKNOWN
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.vocabulary import TokenVocabulary, default_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
SCHEMAS = ROOT / "tests" / "schemas"
MINI_TOKENIZER_FILE = ROOT / "exl2_enforcer" / "data" / "mini_llama3.tokenizer.json.xz"


# ----------------------------------------------------------------------------- vocabularies


def shared_file(name: str) -> Path:
    return SHARED / f"{name}.tokenizer.json.xz"


def require_shared(name: str) -> Path:
    path = shared_file(name)
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/tokenizers not available)")
    return path


@functools.lru_cache(maxsize=None)
def _load_shared_vocab(name: str) -> TokenVocabulary:
    return TokenVocabulary.from_file(shared_file(name))


def vocab_by_name(name: str) -> TokenVocabulary:
    """``"mini"`` = the packaged default vocabulary; else a tokenizer of ../shared (or skip)."""
    if name == "mini":
        return default_vocabulary()
    require_shared(name)
    return _load_shared_vocab(name)


@functools.lru_cache(maxsize=None)
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
    text_ids: np.ndarray  # ids with non-empty bytes that are not special
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
    text = [i for i, b in enumerate(tb) if b and i not in vocab.special_ids]
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


@dataclass
class Generation:
    ids: list[int]
    text: bytes
    finished: bool


def generate(g, rng: np.random.Generator, *, budget: int = 400, temperature: float = 1.0,
             end_bias_always: bool = False) -> Generation:
    """Sample token by token from the fast mask until an end id or the budget."""
    table = token_table(g.vocab)
    m = Matcher(g)
    ids: list[int] = []
    for step in range(budget):
        allowed = m.allowed_ids()
        assert allowed.size > 0, f"empty mask in state {m.state} after {ids}"
        tid = sample_token(rng, allowed, table, step=budget if end_bias_always else step, budget=budget,
                           temperature=temperature)
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
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(.+)$")


def format_checker():
    """jsonschema's FormatChecker plus stricter hostname/email checks (no fqdn package here)."""
    from jsonschema import FormatChecker

    fc = FormatChecker()

    @fc.checks("hostname")
    def _hostname(value: object) -> bool:
        return not isinstance(value, str) or bool(_HOSTNAME.match(value))

    @fc.checks("email")
    def _email(value: object) -> bool:
        if not isinstance(value, str):
            return True
        m = _EMAIL.match(value)
        return bool(m) and len(value) <= 254 and len(value.split("@")[0]) <= 64 and bool(_HOSTNAME.match(m.group(1)))

    return fc


def validator_for(schema: Any):
    import jsonschema

    draft7 = isinstance(schema, dict) and "draft-07" in str(schema.get("$schema", ""))
    cls = jsonschema.Draft7Validator if draft7 else jsonschema.Draft202012Validator
    return cls(schema, format_checker=format_checker())
