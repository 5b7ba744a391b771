"""The byte-set run path (engine/runs.py) gives exactly the brute-force token set.

States inside formats and patterns (email, hostname, uri, ``[a-z0-9-]+``, hex
colours) are reached by seeded random walks over real vocabularies; at each
one the run path's answer (when it applies) must equal the byte-by-byte
reference of tests/enforcer_oracle.py, and it must apply to many of them, so a
path that silently never runs fails here too.
"""

from __future__ import annotations

import numpy as np
import pytest
from enforcer_oracle import reference_text_allowed, token_table, vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.engine.mask import TokenIndex
from exl2_enforcer.engine.runs import RunTables, run_mask
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.matcher import Matcher

WIDE = {
    "formats": {"type": "object", "properties": {
        "mail": {"type": "string", "format": "email"},
        "host": {"type": "string", "format": "hostname"},
        "site": {"type": "string", "format": "uri"}}, "required": ["mail", "host", "site"]},
    "patterns": {"type": "array", "items": {"anyOf": [
        {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
        {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,40}$"}]}},
}


def _check(g, sid: int, table, tried: list[int], agree: dict) -> str | None:
    index = g.engine.index
    got = run_mask(g.automaton, index.run_tables, sid, lambda: None, agree)
    if got is None:
        return None
    tried.append(sid)
    ids, packed = got
    mine = np.union1d(ids, index.unpack(packed))
    ref = table.text_ids[reference_text_allowed(g.automaton, table, sid)]
    if not np.array_equal(mine, np.sort(ref)):
        tb = g.vocab.token_bytes
        extra = [tb[int(i)] for i in np.setdiff1d(mine, ref)[:6]]
        missing = [tb[int(i)] for i in np.setdiff1d(ref, mine)[:6]]
        return f"state {sid}: run path allows {extra} the walk refuses, refuses {missing} it allows"
    return None


def _explore(g, table, seed: int, walks: int = 6, steps: int = 60) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(seed)
    tried: list[int] = []
    errors: list[str] = []
    seen: set[int] = set()
    agree: dict = {}
    for _ in range(walks):
        m = Matcher(g)
        for _step in range(steps):
            if m.state not in seen:
                seen.add(m.state)
                err = _check(g, m.state, table, tried, agree)
                if err:
                    errors.append(err)
            allowed = m.allowed_ids()
            pool = allowed[~np.isin(allowed, table.ends)]
            if pool.size == 0:
                break
            short = pool[table.token_len[pool] <= 3]
            m.accept_token(int(rng.choice(short if short.size and rng.random() < 0.6 else pool)))
    return tried, errors


@pytest.mark.parametrize("name", ["llama3", "llama2"])
@pytest.mark.parametrize("case", list(WIDE))
def test_run_path_equals_bruteforce(name, case):
    v = vocab_by_name(name)
    g = compile_json_schema(WIDE[case], v, SchemaOptions(max_whitespace=1))
    tried, errors = _explore(g, token_table(v), seed=sum(map(ord, name + case)))
    assert not errors, "\n".join(errors[:3])
    assert len(tried) >= 8, f"the run path applied to only {len(tried)} states"


def test_run_cut_short_where_the_set_splits():
    """``[a-z]{5}[a-m]{5}``: after five letters the set splits; longer runs are walked on from there."""
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z]{5}[a-m]{5}", v)
    table = token_table(v)
    tried: list[int] = []
    assert _check(g, g.automaton.start, table, tried, {}) is None
    assert tried == [g.automaton.start]
    # a token running past the split point is decided by the walk on: "abcdefgh" fits, "abcdexyz" does not
    allowed = set(Matcher(g).allowed_ids().tolist())
    tb = v.token_bytes
    for tid in allowed:
        text = tb[tid]
        assert text is not None and len(text) <= 10 and text.isalpha() and text.islower()
        assert all(c <= ord("m") for c in text[5:]), text
    assert any(len(tb[t] or b"") > 5 for t in allowed)


def test_run_tables_bounded_in_bytes():
    v = vocab_by_name("llama3")
    index = TokenIndex.for_vocabulary(v)
    tables = RunTables(index.text_ids, index.text_bytes, index.pack, index.n_words * 4, max_bytes=1)
    one = np.zeros(256, dtype=bool)
    one[ord("a"):ord("z") + 1] = True
    two = one.copy()
    two[ord("0"):ord("9") + 1] = True
    tables.table(one)
    tables.table(two)
    assert len(tables) == 1  # the bound keeps only the most recent table
    with pytest.raises(ValueError, match="max_bytes"):
        tables.max_bytes = -1


def test_run_path_honours_the_deadline():
    """Tokens that leave the run ("abc-de") are walked on in chunks, each preceded by the check."""
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z]{1,30}(-[a-z]{1,5})?", v)

    def check() -> None:
        raise MaskTimeout("deadline")

    sid = g.automaton.walk(g.automaton.start, b"ab")  # a hyphen may come next
    with pytest.raises(MaskTimeout):
        run_mask(g.automaton, g.engine.index.run_tables, sid, check, {})
    got = run_mask(g.automaton, g.engine.index.run_tables, sid, lambda: None, {})
    assert got is not None and got[0].size  # the same call, unhurried, has walked-on tokens
