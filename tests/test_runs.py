"""The byte-set run path (engine/runs.py) gives exactly the brute-force token set.

States inside formats and patterns (email, hostname, uri, ``[a-z0-9-]+``, hex
colours) are reached by seeded random walks over real vocabularies; at each
one the run path's answer (when it applies) must equal the byte-by-byte
reference of tests/enforcer_oracle.py, and it must apply to many of them, so a
path that silently never runs fails here too.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from enforcer_oracle import reference_allowed_ids, reference_text_allowed, token_table, vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.engine import native, runs
from exl2_enforcer.engine.mask import MaskEngine, TokenIndex
from exl2_enforcer.engine.runs import RunMemo, RunTables, run_mask
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

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


def _check(g, sid: int, table, tried: list[int], memo: RunMemo | None = None) -> str | None:
    index = g.engine.index
    got = run_mask(g.automaton, index.run_tables, sid, lambda: None, memo if memo is not None else RunMemo(g.automaton))
    if got is None:
        return None
    tried.append(sid)
    packed, _walked = got
    mine = index.unpack(packed)
    # markup ids (chat-control added tokens) are never constrained text
    ref = np.intersect1d(table.text_ids[reference_text_allowed(g.automaton, table, sid)], index.text_ids)
    if not np.array_equal(mine, np.sort(ref)):
        tb = g.vocab.token_bytes
        extra = [tb[int(i)] for i in np.setdiff1d(mine, ref)[:6]]
        missing = [tb[int(i)] for i in np.setdiff1d(ref, mine)[:6]]
        return f"state {sid}: run path allows {extra} the walk refuses, refuses {missing} it allows"
    return None


def _whole_mask_error(g, m: Matcher, table) -> str | None:
    """``Matcher.allowed_ids()`` (through the engine and its caches) against the brute-force walk."""
    text = g.engine.index.text_ids
    ref = np.intersect1d(table.text_ids[reference_text_allowed(g.automaton, table, m.state)], text)
    got = m.allowed_ids()
    mine = np.intersect1d(got, text)
    if np.array_equal(mine, ref) and np.array_equal(np.setdiff1d(got, text), 
                                                    table.ends if g.automaton.is_accepting(m.state) else []):
        return None
    tb = g.vocab.token_bytes
    extra = [tb[int(i)] for i in np.setdiff1d(mine, ref)[:6]]
    missing = [tb[int(i)] for i in np.setdiff1d(ref, mine)[:6]]
    return f"matcher in state {m.state}: allows {extra} the walk refuses, refuses {missing} it allows"


def _explore(g, table, seed: int, walks: int = 6, steps: int = 60,
             whole: bool = False) -> tuple[list[int], list[str]]:
    """Seeded random walks; at each new state the run path (and with ``whole`` the matcher) is checked."""
    rng = np.random.default_rng(seed)
    tried: list[int] = []
    errors: list[str] = []
    seen: set[int] = set()
    memo = RunMemo(g.automaton)
    for _ in range(walks):
        m = Matcher(g)
        for _step in range(steps):
            if m.state not in seen:
                seen.add(m.state)
                err = _check(g, m.state, table, tried, memo)
                if err:
                    errors.append(err)
                err = _whole_mask_error(g, m, table) if whole else None
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
    assert _check(g, g.automaton.start, table, tried) is None
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
        run_mask(g.automaton, g.engine.index.run_tables, sid, check, RunMemo(g.automaton))
    got = run_mask(g.automaton, g.engine.index.run_tables, sid, lambda: None, RunMemo(g.automaton))
    assert got is not None and got[1] > 0  # the same call, unhurried, has walked-on tokens


def _s(**keywords) -> dict:
    return {"type": "string", **keywords}


#: formats and patterns the run path was not written against, explored by random walks (a small vocabulary)
HELD_OUT = {
    "llama2-formats": ("llama2", {"type": "array", "items": {"anyOf": [
        _s(format="date-time"), _s(format="ipv6"), _s(format="uuid"), _s(format="uri", maxLength=30),
        _s(format="email", minLength=6, maxLength=20), _s(format="hostname", maxLength=12)]}}),
    "llama2-patterns": ("llama2", {"type": "array", "items": {"anyOf": [
        _s(pattern='^[^"\\\\]{3,40}$'), _s(pattern="^([^,]{2,9},)*[^,]*$", maxLength=40),
        _s(pattern="^(\\w+\\d{2,4})+$"), _s(pattern="^([a-m]+|[n-z0-9]+|[A-Z]{3,7})*$"),
        _s(pattern="^(([a-z]{3,7}[0-9]{1,2}){2,3}-)*[a-z]*$"), _s(pattern="^[a-z0-9]+$", minLength=5, maxLength=9)]}}),
}


@pytest.mark.parametrize("case", list(HELD_OUT))
def test_run_path_and_matcher_equal_bruteforce_on_held_out_constraints(case):
    """Formats and patterns (negated, unicode and ``\\w`` classes, counted groups, sets that split,
    escapes, length bounds) on every shared vocabulary: the run path and the whole matcher mask."""
    name, schema = HELD_OUT[case]
    v = vocab_by_name(name)
    g = compile_json_schema(schema, v, SchemaOptions(max_whitespace=1))
    tried, errors = _explore(g, token_table(v), seed=sum(map(ord, case)), walks=3, steps=30, whole=True)
    assert not errors, "\n".join(errors[:3])
    assert len(tried) >= 4, f"the run path applied to only {len(tried)} states"


#: per large vocabulary, constraints and texts leading to states inside their runs (the brute force
#: costs ~0.1 s a state there, so these are chosen, not walked to; each is one the run path takes)
CHOSEN = {
    "qwen3": [("([a-z]{4}|[a-z0-9]{6})[a-z0-9_]{0,50}", [b"", b"ab", b"abcd", b"abc12", b"a1b2c3d_"])],
    "gemma3": [("[\u00e0-\u00ff\u4e00-\u9fffa-z]{2,20}(-[a-z0-9]{1,30})*", [b"ab-", b"ab-c1", b"\xc3\xa0bc-x"]),
               ('(\\\\"|[a-z\u00e9])+', [b"", b"ab", b'a\\"b', b"\xc3\xa9a"]),
               # printable ASCII spells Gemma's chat markup (<start_of_turn>, <unusedN>): never allowed
               ("[ -~]{1,40}", [b"", b"ab"])],
    "deepseek_v3": [("[0-9a-f]{8}-[0-9A-Fa-f]{4}", [b"", b"12", b"12345678-"]),
                    ("(([a-z]{3,7}[0-9]{1,2}){2,3}-)*[a-z]*", [b"", b"abc", b"abc1", b"abcd12efg"])],
    "llama3": [("(\\w+\\d{2,4})+|[ -~]{10,80}", [b"a-b c"]), ("\\w{2,30}", [b"", b"ab_9"])],
}


@pytest.mark.parametrize("name", list(CHOSEN))
def test_run_path_and_engine_equal_bruteforce_on_large_vocabularies(name):
    """Unicode, ``\\w`` and escape classes, counted groups and sets that split, on each large vocabulary."""
    v = vocab_by_name(name)
    table = token_table(v)
    for pattern, texts in CHOSEN[name]:
        g = compile_regex(pattern, v)
        for text in texts:
            sid = g.automaton.walk(g.automaton.start, text)
            tried: list[int] = []
            assert _check(g, sid, table, tried) is None
            assert tried == [sid], f"{pattern!r} after {text!r}: the run path does not apply"
            got = g.engine.index.unpack(g.engine.mask(sid))
            assert np.array_equal(got, reference_allowed_ids(g, table, sid)), (pattern, text)


def _long_token_vocabulary() -> TokenVocabulary:
    """Every byte, plus tokens whose runs of letters are 256 bytes or longer."""
    pieces: list[bytes | None] = [bytes([b]) for b in range(256)]
    pieces += [b"a" * 300, b"a" * 256, b"a" * 260 + b"-", b"b" * 258 + b"-x", b"abcdefgh", None]
    return TokenVocabulary(pieces, end_ids=[len(pieces) - 1], source="long-runs")


@pytest.mark.parametrize("limit", [257, 270])
def test_runs_of_256_bytes_or_more_are_not_clamped(limit):
    """A user vocabulary may hold tokens longer than 255 bytes; their runs must keep their length."""
    v = _long_token_vocabulary()
    g = compile_regex(f"[a-z]{{1,{limit}}}-[a-z]*", v)
    table = token_table(v)
    tried: list[int] = []
    assert _check(g, g.automaton.start, table, tried) is None
    assert tried == [g.automaton.start]
    allowed = {v.token_bytes[i] for i in Matcher(g).allowed_ids().tolist() if i < v.n_ids}
    assert b"a" * 256 in allowed
    assert b"a" * 300 not in allowed
    assert (b"a" * 260 + b"-" in allowed) == (limit >= 260)
    assert (b"b" * 258 + b"-x" in allowed) == (limit >= 258)


def test_run_path_checks_the_deadline_even_with_nothing_to_walk_on():
    """``[a-z]{5,30}`` at its start: no token leaves the run alive, yet a passed deadline still raises."""
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z]{5,30}", v)
    sid = g.automaton.start
    got = run_mask(g.automaton, g.engine.index.run_tables, sid, lambda: None, RunMemo(g.automaton))
    assert got is not None and got[1] == 0  # the run path applies, with no walked-on token

    def check() -> None:
        raise MaskTimeout("deadline")

    with pytest.raises(MaskTimeout):
        run_mask(g.automaton, g.engine.index.run_tables, sid, check, RunMemo(g.automaton))
    engine = MaskEngine(g.automaton, g.engine.index)
    with pytest.raises(MaskTimeout):
        engine.mask(sid, deadline=time.perf_counter() - 1.0)  # passed before the call: no timing involved
    assert np.array_equal(engine.mask(sid), g.engine.mask(sid))


def test_run_cache_entries_made_before_a_timeout_are_counted():
    """A mask that times out part-way and is then retried retains as many bytes as one computed at once."""
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*", v)
    sid = g.automaton.walk(g.automaton.start, b"ab")
    once = MaskEngine(g.automaton, g.engine.index)
    once.mask(sid)
    retried = MaskEngine(g.automaton, g.engine.index)
    calls = []

    def first_chunk_times_out() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MaskTimeout("deadline")

    retried.chunk_hook = first_chunk_times_out
    with pytest.raises(MaskTimeout):
        retried.mask(sid)
    assert np.array_equal(retried.mask(sid), once.mask(sid))
    assert retried.retained_bytes() == once.retained_bytes() > 0


def test_run_cache_is_dropped_when_the_automaton_evicts():
    """After ``Automaton.evict()`` the ids of the short ``x`` run name states of the long ``z`` run."""
    v = vocab_by_name("llama2")
    table = token_table(v)
    g = compile_regex("x[a-z]{1,6}0|z[a-z]{1,40}", v)
    a = g.automaton
    before = a.walk(a.start, b"x")
    g.engine.mask(before)  # the engine learns where runs of letters lead from the x branch's ids
    a.evict()  # the engine only learns of it from the generation number
    after = a.walk(a.start, b"z")
    assert np.array_equal(g.engine.index.unpack(g.engine.mask(after)), reference_allowed_ids(g, table, after))
    assert any(len(v.token_bytes[i] or b"") > 7 for i in reference_allowed_ids(g, table, after).tolist())


def test_masks_stay_exact_after_the_automaton_evicts():
    """``Automaton.evict()`` renumbers every state; masks along new walks still equal the brute force."""
    v = vocab_by_name("llama2")
    table = token_table(v)
    g = compile_json_schema(WIDE["formats"], v, SchemaOptions(max_whitespace=1))
    _explore(g, table, seed=5, walks=2, steps=25)  # cold masks along the way fill the engine's caches
    g.automaton.evict()  # the engine only learns of it from the generation number
    # a different walk first, so the new generation numbers its states differently
    tried, errors = _explore(g, table, seed=11, walks=3, steps=25, whole=True)
    assert not errors, "\n".join(errors[:3])
    assert tried


def test_run_tables_shared_by_grammars_on_threads():
    """Two grammars compute cold masks at once over one fresh index whose run tables keep being evicted."""
    v = vocab_by_name("llama2")
    table = token_table(v)
    index = TokenIndex(v)  # not the cached one: its run tables are built by the threads below
    index.run_tables.max_bytes = 1  # one table at a time: builds, hits and evictions interleave
    grammars = [compile_regex(p, v) for p in ("[a-z0-9]{2,30}(-[a-z0-9]{1,20})*", "([a-z]+[0-9]{1,3}|[A-Z]{3,9})*",
                                              "[ -~]{0,60}x", "[^,]{1,25}(,[^,]{1,25})*")]
    work = []
    for g in grammars:
        rng = np.random.default_rng(len(work))
        sids = []
        for _ in range(12):
            data = bytes(rng.choice(list(b"abcxyz019-,XY ."), size=int(rng.integers(0, 12))).tolist())
            sid = g.automaton.walk(g.automaton.start, data)
            if sid >= 0:
                sids.append(sid)
        work.append((MaskEngine(g.automaton, index), sids))
    results: dict[tuple[int, int], np.ndarray] = {}
    barrier = threading.Barrier(len(work))

    def run(k: int) -> None:
        engine, sids = work[k]
        barrier.wait()
        for sid in sids:
            results[(k, sid)] = index.unpack(engine.mask(sid))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == sum(len(set(s)) for _, s in work) > 8
    for (k, sid), got in results.items():
        g = grammars[k]
        assert np.array_equal(got, reference_allowed_ids(g, table, sid)), (k, sid)


def test_token_bytes_cost_about_the_token_text():
    """The per-vocabulary byte table behind every run table lies outside ``max_bytes``: it must cost
    about the token text itself (one byte per byte, a few integers per token), not 16 bytes per byte."""
    index = TokenIndex.for_vocabulary(vocab_by_name("llama3"))
    tokens = index.run_tables.tokens
    held = sum(a.nbytes for a in vars(tokens).values() if isinstance(a, np.ndarray))
    text = sum(len(index.text_bytes[i] or b"") for i in index.text_ids.tolist())
    assert tokens.nbytes == held
    assert held <= text + 32 * index.text_ids.shape[0] + 257 * 8


def test_run_table_bytes_cover_what_they_hold():
    """``RunTable.nbytes`` (what ``max_bytes`` bounds) covers its arrays and every packed mask it caches."""
    index = TokenIndex.for_vocabulary(vocab_by_name("llama2"))
    tables = RunTables(index.text_ids, index.text_bytes, index.pack, index.n_words * 4)
    for ranges in ([(97, 122)], [(97, 122), (48, 57)], [(32, 126)], [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0xFF)]):
        members = np.zeros(256, dtype=bool)
        for lo, hi in ranges:
            members[lo:hi + 1] = True
        table = tables.table(members)
        for r in range(table.max_run + 2):
            table.pure_packed(r)
        held = 0
        for value in vars(table).values():
            if isinstance(value, np.ndarray) and value is not tables.tokens.ids:  # the ids are the vocabulary's
                held += value.nbytes
            elif isinstance(value, dict):
                held += sum(a.nbytes for a in value.values())
            elif isinstance(value, tuple):  # the native walk's layout of the groups
                held += sum(a.nbytes for a in value)
        assert table.nbytes >= held > 0


@pytest.mark.parametrize("native_walks", [True, False])
def test_run_memo_bytes_cover_what_it_holds_and_reach_the_engine_budget(native_walks, monkeypatch):
    """``RunMemo.nbytes`` covers every byte set's arrays and agreement entries (remembered by the
    numpy path; the native chain reads rows instead), and the engine adds what a mask's run path
    remembered to its retained bytes (what the grammar's budget bounds)."""
    monkeypatch.setattr(native, "enabled", native.enabled and native_walks)
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*@[a-z]{2,20}", v)
    memo = RunMemo(g.automaton)
    sids = [g.automaton.walk(g.automaton.start, p) for p in (b"", b"ab", b"ab-", b"ab-cd", b"ab-cd@x")]
    results = [run_mask(g.automaton, g.engine.index.run_tables, sid, lambda: None, memo) for sid in sids]
    assert sum(r is not None for r in results) >= 3  # the path applies: the memo is exercised
    held = 0
    for byte_set in memo.sets():
        held += byte_set.members.nbytes + 8 * len(byte_set.agree)
        if byte_set.group_classes is not None:
            held += byte_set.group_classes.nbytes
    assert memo.nbytes >= held > 0
    assert any(len(b.agree) > 1 for b in memo.sets()) == (not native.enabled)

    engine = MaskEngine(g.automaton, g.engine.index)
    before = engine.retained_bytes()
    packed = engine.mask(sids[1])
    added = engine.retained_bytes() - before
    # a fresh engine: its memo starts empty, so the same walk adds at least what this one holds
    same = RunMemo(g.automaton)
    run_mask(g.automaton, g.engine.index.run_tables, sids[1], lambda: None, same)
    assert added >= packed.nbytes + same.nbytes > packed.nbytes


def test_one_memo_serves_the_run_tables_of_two_vocabularies():
    """What a RunMemo keeps per run table (the classes of its groups) follows the table it is
    given: one automaton's memo used with llama2's tables (fewer groups for ``[a-z]``), llama3's,
    then llama2's again stays exact."""
    g = compile_regex("[a-z]{1,30}(-[a-z]{1,5})?", vocab_by_name("llama3"))
    sid = g.automaton.walk(g.automaton.start, b"ab")  # a hyphen may come next: tokens walked on
    memo = RunMemo(g.automaton)
    for name in ("llama2", "llama3", "llama2"):
        v = vocab_by_name(name)
        index, table = TokenIndex.for_vocabulary(v), token_table(v)
        got = run_mask(g.automaton, index.run_tables, sid, lambda: None, memo)
        assert got is not None and got[1] > 0
        ref = np.intersect1d(table.text_ids[reference_text_allowed(g.automaton, table, sid)], index.text_ids)
        assert np.array_equal(index.unpack(got[0]), ref), name


@pytest.mark.parametrize("name", ["gemma3", "qwen3"])
def test_negated_class_uses_the_run_path_on_a_large_vocabulary(name):
    """``[^,]{0,40},``: tens of thousands of multi-byte tokens leave the ASCII run; the native walk
    takes them all on (no fallback to a whole-vocabulary trie walk) and the mask stays exact."""
    v = vocab_by_name(name)
    g = compile_regex("[^,]{0,40},", v)
    table = token_table(v)
    sid = g.automaton.walk(g.automaton.start, b"ab")
    got = run_mask(g.automaton, g.engine.index.run_tables, sid, lambda: None, RunMemo(g.automaton))
    if native.enabled:
        assert got is not None and got[1] > runs.MAX_WALKED  # more than the numpy walk would take on
    tried: list[int] = []
    assert _check(g, sid, table, tried) is None
