"""The exllamav2 0.3.2 filters, driven by exllamav2's own sampler and dynamic job, on CPU.

Everything here runs on a CPU-only machine: exllamav2's CUDA extension is replaced by the CPU
stand-in in ``exl2_cpu_stub.py`` (sampling and logit filters re-implemented in torch).  The
Python parts are the real exllamav2 0.3.2: ``ExLlamaV2Config``, ``ExLlamaV2Tokenizer`` (real
tokenizer files), ``ExLlamaV2Sampler.sample`` and ``ExLlamaV2DynamicJob.receive_logits`` /
``receive_sample``.  There is no model forward pass: logits are seeded random numbers.  Nothing
here is a GPU result; ``tests/gpu/`` has the end-to-end test for a CUDA machine.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import exl2_cpu_stub
import pytest
import torch
from jsonschema import Draft202012Validator

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, TokenRejected

SCHEMAS = Path(__file__).resolve().parent / "schemas"
OPTIONS = SchemaOptions(max_whitespace=2, max_depth=4)
FUNCTION_CALL = {
    "$defs": {
        "loc": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                 "country": {"enum": ["FR", "JP", "日本", "🇯🇵"]}},
                "required": ["city"]},
        "weather": {"type": "object", "required": ["name", "arguments"], "properties": {
            "name": {"const": "get_weather"},
            "arguments": {"type": "object", "required": ["location", "unit"], "properties": {
                "location": {"$ref": "#/$defs/loc"}, "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14}}}}},
        "search": {"type": "object", "required": ["name", "arguments"], "properties": {
            "name": {"const": "search"},
            "arguments": {"type": "object", "required": ["query"], "properties": {
                "query": {"type": "string", "maxLength": 32},
                "tags": {"type": "array", "items": {"enum": ["news", "😀", "東京"]}, "maxItems": 3}}}}},
        # anyOf lives in $defs: next to the root's "$defs" the engine refuses it (see the report)
        "call": {"anyOf": [{"$ref": "#/$defs/weather"}, {"$ref": "#/$defs/search"}]},
    },
    "$ref": "#/$defs/call",
}
TREE = json.loads((SCHEMAS / "recursive_tree.json").read_text(encoding="utf-8"))["schema"]
UNICODE_ENUMS = json.loads((SCHEMAS / "enum_unicode.json").read_text(encoding="utf-8"))["schema"]
FREE_TEXT = {"type": "object", "required": ["title", "body"], "properties": {
    "title": {"type": "string", "maxLength": 16}, "body": {"type": "string", "minLength": 1, "maxLength": 40}}}
WALK_SCHEMAS = {"function_call": FUNCTION_CALL, "tree": TREE, "unicode_enums": UNICODE_ENUMS, "free_text": FREE_TEXT}
ALL_TOKENIZERS = ["mini", "llama3", "qwen3", "llama2"]


# ----------------------------------------------------------------------------- set-up


@pytest.fixture(scope="module")
def ns(exl2):
    """exllamav2 names and the adapter module (imported only once the stand-in is in place)."""
    from exllamav2 import ExLlamaV2, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    from exl2_enforcer.contrib.exllamav2 import filter as adapter

    return SimpleNamespace(ExLlamaV2=ExLlamaV2, Config=ExLlamaV2Config, Tokenizer=ExLlamaV2Tokenizer,
                           Job=ExLlamaV2DynamicJob, Sampler=ExLlamaV2Sampler, adapter=adapter)


_ENVS: dict[tuple, SimpleNamespace] = {}


@pytest.fixture(scope="module")
def env(ns, exl2_model_dir):
    """``env(tokenizer, vocab_size=None)``: a loaded model folder (real config + tokenizer, model not loaded)."""

    def load(name: str, vocab_size: int | None = None) -> SimpleNamespace:
        key = (name, vocab_size)
        if key not in _ENVS:
            folder = exl2_model_dir(name, vocab_size=vocab_size)
            config = ns.Config(str(folder))
            tokenizer = ns.Tokenizer(config)
            _ENVS[key] = SimpleNamespace(name=name, config=config, tokenizer=tokenizer, model=ns.ExLlamaV2(config),
                                         width=config.vocab_size, n_tok=tokenizer.get_vocab_size())
        return _ENVS[key]

    return load


@pytest.fixture(scope="module")
def pool():
    """The generator's background filter pool (16 workers in ExLlamaV2DynamicGenerator)."""
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def settings(ns, **kw):
    """Sampler settings: temperature, top-k, top-p, min-p (what the CPU stand-in implements)."""
    base = dict(temperature=1.0, top_k=50, top_p=0.9, min_p=0.02, token_repetition_penalty=1.0)
    return ns.Sampler.Settings(**{**base, **kw})


def make_filter(ns, e, schema=None, *, list_path: bool = False, kind: str = "JsonSchemaFilter", **kw):
    """An adapter filter; ``list_path`` makes exllamav2 use next() instead of the mask."""
    cls = getattr(ns.adapter, kind)
    if list_path:
        cls = type(f"ListPath{kind}", (cls,), {"can_mask_logits": lambda self: False})
    arg = schema if schema is not None else kw.pop("arg")
    if kind == "JsonSchemaFilter":
        kw.setdefault("options", OPTIONS)
    return cls(e.model, e.tokenizer, arg, **kw)


@dataclass
class Walk:
    """One generation: sampled ids, why it ended, and the constrained text (end ids dropped)."""

    tokens: list[int]
    reason: str
    text: bytes


def run_loop(ns, e, f, seed: int, pool, *, max_new_tokens: int = 300, sampler=None) -> Walk:
    """Drive ``f`` the way ExLlamaV2DynamicJob does: drop + begin, then per step sample
    (``get_next`` inside the real sampler), feed, and queue the background work on ``pool``."""
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    sampler = sampler or settings(ns)
    f.background_drop()
    f.begin("")
    seq = torch.zeros((1, 1), dtype=torch.long)
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        logits = torch.randn((1, 1, e.width), generator=gen) * 3.0
        tok, _, _, _, end_filter = ns.Sampler.sample(logits, sampler, seq, rng.random(), e.tokenizer, filters=[f])
        assert torch.isfinite(logits).any(), "a step left every logit at -inf"
        t = int(tok)
        assert 0 <= t < min(e.width, e.n_tok), f"sampled id {t} beyond logits {e.width} / tokenizer {e.n_tok}"
        tokens.append(t)
        f.feed(tok)
        seq = torch.cat([seq, tok], dim=1)
        if f.can_mask_logits() and f.use_background_worker():
            f.background_prepare_logit_mask(pool)
        else:
            f.background_next(pool)
        if t in f.vocab.end_ids:
            return Walk(tokens, "stop_token", f.vocab.decode_bytes(tokens[:-1]))
        if end_filter:
            assert f.is_complete, "end_filter on a token that does not complete the value"
            return Walk(tokens, "end_filter", f.vocab.decode_bytes(tokens))
    return Walk(tokens, "max_new_tokens", b"")


def check_walk(w: Walk, f, schema, *, list_path: bool) -> None:
    """A finished walk is valid JSON for ``schema``; no special token inside the text."""
    # list path: an object is complete at its last "}", which exllamav2 reports as "end_filter"
    assert w.reason == ("end_filter" if list_path else "stop_token"), f"did not finish: {w}"
    inner = w.tokens[:-1] if w.reason == "stop_token" else w.tokens
    assert not set(inner) & f.vocab.special_ids, "a special token inside the JSON text"
    value = json.loads(w.text.decode("utf-8"))
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)


# ----------------------------------------------------------------------------- random walks


@pytest.mark.parametrize("path", ["mask", "list"])
@pytest.mark.parametrize("name", ALL_TOKENIZERS)
def test_random_walks_validate(ns, env, pool, name, path):
    """Seeded random logits through the real sampler: every output validates."""
    e = env(name)
    rows = exl2_cpu_stub.STATS["rows"]
    for schema in WALK_SCHEMAS.values():
        f = make_filter(ns, e, schema, list_path=path == "list")
        for seed in range(3):
            check_walk(run_loop(ns, e, f, seed, pool), f, schema, list_path=path == "list")
    assert not exl2_cpu_stub.is_installed() or exl2_cpu_stub.STATS["rows"] > rows


def brute_end_tokens(f, width: int) -> set[int]:
    """End tokens by definition: allowed ids after which the matcher is complete."""
    out = {i for i in f.end_ids if i < width} if f.matcher.is_accepting() else set()
    for t in f.next()[0]:
        m = f.matcher.fork()
        if t not in f.vocab.end_ids and m.try_accept(t) and m.is_complete():
            out.add(t)
    return out


@pytest.mark.parametrize("schema", [FREE_TEXT, UNICODE_ENUMS, {"type": "integer", "minimum": 0, "maximum": 250}])
def test_end_tokens_match_definition(ns, env, pool, schema):
    """The list path's end tokens are exactly the allowed ids that complete the value."""
    e = env("mini")
    f = make_filter(ns, e, schema, list_path=True)
    w = run_loop(ns, e, f, 11, pool)
    assert w.reason == "end_filter" and f.is_complete
    f.begin("")
    for t in w.tokens:
        assert f.next()[1] == brute_end_tokens(f, e.width)
        f.feed(t)


def test_repetition_penalty_path(ns, env, pool):
    """Repetition, frequency and presence penalties (the extension's apply_rep_penalty) too."""
    e = env("mini")
    f = make_filter(ns, e, FUNCTION_CALL)
    w = run_loop(ns, e, f, 3, pool, sampler=settings(ns, token_repetition_penalty=1.1,
                                                     token_frequency_penalty=0.1, token_presence_penalty=0.1))
    check_walk(w, f, FUNCTION_CALL, list_path=False)


# ----------------------------------------------------------------------------- the real dynamic job


class GeneratorStandIn:
    """What ExLlamaV2DynamicJob reads from its generator while sampling; no model, no cache.

    Pages are larger than any sequence here, so the job's page hashing never runs."""

    def __init__(self, tokenizer, width: int, pool) -> None:
        self.tokenizer, self.padded_vocab_size = tokenizer, (width + 31) // 32 * 32
        self.page_size, self.max_pages, self.max_total_tokens, self.max_batch_size = 1 << 30, 1, 1 << 30, 1
        self.filter_queue, self.filter_pool, self.num_draft_tokens = [], pool, 0
        self.referenced_pages, self.unreferenced_pages, self.model = {}, {}, None
        self.draft_model, self.use_ngram_draft = None, False


def run_job(ns, e, f, seed: int, pool, max_new_tokens: int = 300) -> dict:
    """One real ExLlamaV2DynamicJob through the per-iteration steps of ``iterate_gen``."""
    gen = GeneratorStandIn(e.tokenizer, e.width, pool)
    prompt = e.tokenizer.encode("Answer in JSON:", add_bos=True)
    job = ns.Job(input_ids=prompt, max_new_tokens=max_new_tokens, gen_settings=settings(ns), seed=seed,
                 stop_conditions=f.end_ids, filters=[f])
    job.prepare_for_queue(gen, 0)
    for seq in job.sequences:
        seq.kv_position = len(seq.sequence_ids) - 1  # prefill done (there is no model here)
    job.time_enqueue = job.time_first_prefill = job.time_first_token = time.time()
    logits_gen, results = torch.Generator().manual_seed(seed), []
    while True:
        for filt, use_mask in gen.filter_queue:  # iterate_gen, right after scheduling the forward pass
            (filt.background_prepare_logit_mask if use_mask else filt.background_next)(gen.filter_pool)
        gen.filter_queue.clear()
        logits = torch.randn((1, 1, gen.padded_vocab_size), generator=logits_gen) * 3.0
        eos, _ = job.receive_sample(logits, *job.receive_logits(logits), results, True)
        if eos:
            return results[-1]


@pytest.mark.parametrize("path", ["mask", "list"])
@pytest.mark.parametrize("name", ["mini", "llama3"])
def test_real_dynamic_job(ns, env, pool, name, path):
    """ExLlamaV2DynamicJob's own receive_logits/receive_sample; filters reused across jobs."""
    e = env(name)
    f = make_filter(ns, e, FUNCTION_CALL, list_path=path == "list")
    for seed in range(3):  # the same filter object serves job after job
        last = run_job(ns, e, f, seed, pool)
        assert last["eos"] and last["eos_reason"] == ("stop_token" if path == "mask" else "end_filter"), last
        value = json.loads(last["full_completion"])
        Draft202012Validator(FUNCTION_CALL, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)


# ----------------------------------------------------------------------------- widths


def test_logits_wider_than_tokenizer(ns, env, pool):
    """Llama 3.2 Vision shape: the head is 128,256 wide, the tokenizer has fewer ids."""
    e = env("mini", 128256)
    assert e.n_tok < e.width == 128256
    for path in ("mask", "list"):
        f = make_filter(ns, e, FUNCTION_CALL, list_path=path == "list")
        for seed in range(2):
            check_walk(run_loop(ns, e, f, seed, pool), f, FUNCTION_CALL, list_path=path == "list")
    f = make_filter(ns, e, FUNCTION_CALL)
    for width in (128256, 8256, 8000):
        logits = torch.zeros(width)
        assert f.mask_logits(logits) is logits and logits.shape == (width,)
        allowed = torch.isfinite(logits).nonzero().flatten()
        assert allowed.numel() and int(allowed.max()) < min(width, e.n_tok)


def test_logits_narrower_than_tokenizer(ns, env, pool):
    """Logits 128,000 wide, tokenizer 128,256: no id beyond the logits is ever sampled."""
    e = env("llama3", 128000)
    assert e.width == 128000 < e.n_tok
    f = make_filter(ns, e, FREE_TEXT, list_path=True)
    for seed in range(2):
        w = run_loop(ns, e, f, seed, pool)  # asserts every sampled id < 128000
        check_walk(w, f, FREE_TEXT, list_path=True)
        assert w.reason == "end_filter"
    # mask path: every end id is beyond the logits, so a complete value can't end: a clear error
    f = make_filter(ns, e, FREE_TEXT)
    with pytest.raises(EnforcerError, match="none of the end ids"):
        run_loop(ns, e, f, 0, pool)


# ----------------------------------------------------------------------------- forced sequences


def exact_ids(e, f, text: str) -> list[int]:
    """The tokenizer's ids for ``text`` if they spell exactly its bytes, else a greedy spelling."""
    data = text.encode("utf-8")
    ids = e.tokenizer.encode(text, encode_special_tokens=False).flatten().tolist()
    if f.vocab.decode_bytes(ids) == data:
        return ids
    table = {b: i for i, b in enumerate(f.vocab.token_bytes) if b and i not in f.vocab.special_ids}
    out, pos = [], 0
    while pos < len(data):
        n = max(k for k in range(1, min(len(data) - pos, 64) + 1) if data[pos:pos + k] in table)
        out.append(table[data[pos:pos + n]])
        pos += n
    return out


def force(f, ids: list[int], width: int) -> None:
    """Feed ``ids``, checking before each that both the mask and next() allow it."""
    for t in ids:
        logits = torch.zeros(width)
        f.mask_logits(logits)
        assert torch.isfinite(logits[t]), f"mask refuses forced token {t} {f.vocab.token_bytes[t]!r}"
        assert t in set(f.next()[0])
        f.feed(torch.tensor([[t]]))


@pytest.mark.parametrize("name", ALL_TOKENIZERS)
def test_split_unicode_and_escapes_accepted(ns, env, name):
    """Emoji/CJK split over tokens, \\u escapes and surrogate pairs are accepted."""
    e = env(name)
    schema = {"type": "object", "required": ["city", "note"], "properties": {
        "city": {"enum": ["🌦 東京", "Zürich"]}, "note": {"type": "string", "maxLength": 40}}}
    f = make_filter(ns, e, schema, options=SchemaOptions(max_whitespace=0))
    text = '{"city":"🌦 東京","note":"\\u6771\\u4eac \\ud83c\\udf26 🌦 ok"}'
    ids = exact_ids(e, f, text)
    f.begin("")
    force(f, ids, e.width)
    assert f.is_complete and f.next()[0] == sorted(i for i in f.end_ids if i < e.width)
    partial = [t for t in ids if not _decodes(f.vocab.token_bytes[t])]
    assert partial, "expected some token holding part of a UTF-8 character"


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", ["mini", "llama3", "qwen3"])
def test_special_tokens_never_allowed_inside_text(ns, env, name):
    """Special ids are masked inside the value; only end ids after it."""
    e = env(name)
    f = make_filter(ns, e, FREE_TEXT, options=SchemaOptions(max_whitespace=0))
    f.begin("")
    specials = sorted(i for i in f.vocab.special_ids if i < e.width)
    for prefix in ("", '{"title":"', '{"title":"a', '{"title":"a","body":"b"'):
        f.begin("")
        for t in exact_ids(e, f, prefix) if prefix else []:
            f.feed(t)
        logits = torch.zeros(e.width)
        f.mask_logits(logits)
        assert not torch.isfinite(logits[specials]).any()
        assert not set(f.next()[0]) & set(specials)
    f.feed(exact_ids(e, f, "}")[0])
    logits = torch.zeros(e.width)
    f.mask_logits(logits)
    assert torch.isfinite(logits).nonzero().flatten().tolist() == [i for i in f.end_ids if i < e.width]


def test_refused_token_names_its_id(ns, env):
    """Feeding a token the grammar refuses raises, naming the id."""
    e = env("mini")
    f = make_filter(ns, e, FREE_TEXT)
    bad = exact_ids(e, f, "x")[0]
    with pytest.raises(TokenRejected, match=rf"token {bad}\b"):
        f.feed(torch.tensor([[bad]]))


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("name", ["mini", "llama3"])
def test_concurrent_filters_match_sequential(ns, env, pool, name):
    """24 filters of one fresh grammar on 16 threads give the sequential results."""
    e = env(name)
    # a schema no other test compiled, so the concurrent runs build states and masks together
    schema = {**FUNCTION_CALL, "$comment": uuid.uuid4().hex}
    seeds = list(range(24))
    filters = [make_filter(ns, e, schema) for _ in seeds]
    assert len({id(f.grammar) for f in filters}) == 1
    with ThreadPoolExecutor(max_workers=16) as workers:
        together = list(workers.map(lambda fs: run_loop(ns, e, fs[0], fs[1], pool).tokens, zip(filters, seeds)))
    alone = [run_loop(ns, e, make_filter(ns, e, schema), s, pool).tokens for s in seeds]
    assert together == alone


# ----------------------------------------------------------------------------- protocol


def test_clone_begin_and_background_drop(ns, env, pool):
    """clone() is independent; begin() and background_drop() make a filter reusable."""
    e = env("mini")
    f = make_filter(ns, e, FREE_TEXT, options=SchemaOptions(max_whitespace=0))
    f.begin("")
    for t in exact_ids(e, f, '{"title":"ab'):
        f.feed(t)
    c = f.clone()
    assert type(c) is type(f) and c.grammar is f.grammar and c.background_result is None
    c.feed(exact_ids(e, f, '"')[0])
    assert c.matcher.state != f.matcher.state and f.next() != c.next()
    f.background_prepare_logit_mask(pool)
    f.background_drop()
    assert f.background_result is None
    failed: Future = Future()
    failed.set_exception(RuntimeError("background work failed"))
    f.background_result = failed
    f.begin("")  # drops the failed result and resets
    assert f.background_result is None and f.matcher.state == f.matcher.history[0]
    check_walk(run_loop(ns, e, f, 1, pool), f, FREE_TEXT, list_path=False)
    with pytest.raises(ValueError, match="token healing"):
        f.begin("He")


def test_mask_cached_per_state(ns, env):
    """prepare_logit_mask() caches the unpacked mask for mask_logits() to reuse."""
    e = env("mini")
    f = make_filter(ns, e, FREE_TEXT)
    f.begin("")
    assert f.prepare_logit_mask() is True
    first = f._mask_tensor(f._default_width(), torch.device("cpu"))
    assert f._mask_tensor(f._default_width(), torch.device("cpu")) is first
    assert first.dtype == torch.bool and first.shape[0] == (e.width + 31) // 32 * 32


@pytest.mark.parametrize("name", ["mini", "qwen3"])
@pytest.mark.parametrize("path", ["mask", "list"])
def test_two_phase_trigger(ns, env, pool, name, path):
    """Free text until '<tool_call>' (split over tokens, or one token), then valid JSON."""
    e = env(name)
    f = make_filter(ns, e, FUNCTION_CALL, list_path=path == "list", trigger="<tool_call>")
    f.begin("")
    assert not f.is_active
    logits = torch.randn(e.width)
    before = logits.clone()
    f.mask_logits(logits)
    assert torch.equal(logits, before)
    ids, ends = f.next()
    assert ids == list(range(min(e.width, e.n_tok))) and ends == set()
    force(f, exact_ids(e, f, "Let me check the weather. "), e.width)
    assert not f.is_active
    force(f, exact_ids(e, f, "<tool_call>"), e.width)
    assert f.is_active
    gen, rng, seq = torch.Generator().manual_seed(5), random.Random(5), torch.zeros((1, 1), dtype=torch.long)
    out: list[int] = []
    while not f.is_complete:
        logits = torch.randn((1, 1, e.width), generator=gen) * 3.0
        tok, *_ = ns.Sampler.sample(logits, settings(ns), seq, rng.random(), e.tokenizer, filters=[f])
        f.feed(tok)
        out.append(int(tok))
        assert len(out) < 300
    value = json.loads(f.vocab.decode_bytes(out))
    Draft202012Validator(FUNCTION_CALL).validate(value)


def test_trigger_refuses_bad_tail_and_takes_good_tail(ns, env):
    """A token completing the trigger is allowed iff its remaining bytes can start the value."""
    e = env("mini")
    f = make_filter(ns, e, FREE_TEXT, trigger="<tool_call>")
    f.begin("")
    force(f, exact_ids(e, f, "ok <tool_call"), e.width)
    tails = {t: b for t, b in enumerate(f.vocab.token_bytes) if b and b.startswith(b">") and len(b) > 1}
    logits = torch.zeros(e.width)
    f.mask_logits(logits)
    auto = f.grammar.automaton
    for t, piece in tails.items():  # allowed iff the bytes after ">" can start the JSON value
        assert bool(torch.isfinite(logits[t])) == (auto.walk(auto.start, piece[1:]) >= 0), piece
    assert any(not torch.isfinite(logits[t]) for t in tails)
    f.feed(exact_ids(e, f, ">")[0])
    assert f.is_active and not f.is_complete


def test_token_id_trigger(ns, env):
    """A token id as trigger: the text '<tool_' does not switch the grammar on, the id does."""
    e = env("qwen3")
    call = e.tokenizer.single_id("<tool_call>")
    f = make_filter(ns, e, FREE_TEXT, trigger=call, options=SchemaOptions(max_whitespace=0))
    f.begin("")
    force(f, exact_ids(e, f, "<tool_"), e.width)
    assert not f.is_active
    f.feed(call)
    force(f, exact_ids(e, f, '{"title":"t","body":"b"}'), e.width)
    assert f.is_complete


@pytest.mark.parametrize("path", ["mask", "list"])
def test_regex_and_choice_filters(ns, env, pool, path):
    """RegexFilter and ChoiceFilter outputs match."""
    e = env("mini")
    lp = path == "list"
    rf = make_filter(ns, e, kind="RegexFilter", arg=r"[0-9]{3}-[a-z]{2,4}", list_path=lp)
    cf = make_filter(ns, e, kind="ChoiceFilter", arg=["yes", "no", "maybe 🤔"], list_path=lp)
    for seed in range(3):
        w = run_loop(ns, e, rf, seed, pool)
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", w.text.decode()), w
        w = run_loop(ns, e, cf, seed, pool)
        assert w.text.decode() in ("yes", "no", "maybe 🤔"), w


def test_package_imports_without_exllamav2():
    """Only contrib.exllamav2 needs exllamav2; the package and contrib/__init__ don't."""
    code = ("import sys; sys.modules['exllamav2'] = None\n"
            "import exl2_enforcer, exl2_enforcer.contrib, exl2_enforcer.grammar, exl2_enforcer.matcher\n"
            "try:\n    import exl2_enforcer.contrib.exllamav2\nexcept ImportError:\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "ok", out.stderr
