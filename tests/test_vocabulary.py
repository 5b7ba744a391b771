"""Tests of exl2_enforcer.tokens.vocabulary: exact token bytes for real tokenizers.

The five real tokenizers live in ``../shared/tokenizers`` (next to the project root);
tests that need them skip when that folder is missing.  The committed mini tokenizers in
``tests/data`` (made by ``tests/data/make_mini_tokenizers.py``) cover fresh clones.
"""

from __future__ import annotations

import functools
import json
import lzma
import random
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from data_sets import missing_data

from exl2_enforcer.errors import VocabularyError
from exl2_enforcer.tokens.bytemaps import byte_to_unicode
from exl2_enforcer.tokens.vocabulary import TokenVocabulary, default_vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
DATA = ROOT / "tests" / "data"
REAL = ("llama3", "qwen3", "deepseek_v3", "llama2", "gemma3")
MINI = ("mini_llama3", "mini_llama2")
N_TEXTS = 1500


# ------------------------------------------------------------------ loading


def _path(name: str) -> Path:
    """Tokenizer file of a real (shared) or mini (committed) tokenizer."""
    if name.startswith("mini_"):
        return DATA / f"{name}.tokenizer.json.xz"
    if not SHARED.is_dir():
        missing_data(f"real tokenizers not available: {SHARED} is missing")
    return SHARED / f"{name}.tokenizer.json.xz"


@functools.cache
def load(name: str) -> tuple[tokenizers.Tokenizer, TokenVocabulary]:
    """The real tokenizer and the vocabulary built from the same file (cached per session).

    Added tokens count as text here, so that the byte table can be compared with the
    tokenizer's own encode/decode; the default (markup added tokens are not text) is tested in
    ``test_added_tokens_*``.
    """
    path = _path(name)
    tok = tokenizers.Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode())
    return tok, TokenVocabulary.from_file(path, added_tokens_as_text=True)


@functools.cache
def load_default(name: str) -> TokenVocabulary:
    """The vocabulary with the default options (chat-control added tokens are not text)."""
    return TokenVocabulary.from_file(_path(name))


@functools.cache
def raw_json(name: str) -> dict:
    """The tokenizer.json itself, parsed independently of the code under test."""
    return json.loads(lzma.decompress(_path(name).read_bytes()))


# ------------------------------------------------------------ text generator

EMOJI = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏽‍💻", "🇯🇵", "🇫🇷", "🇺🇸", "1️⃣", "❤️", "👍🏿", "🧑‍🤝‍🧑", "😀", "🤖", "🐈‍⬛"]
WORDS = ["Ελληνικά", "кириллица", "עברית", "العربية", "हिन्दी", "ภาษาไทย", "naïve", "café", "Straße",
         "Zoë", "façade", "ø", "½", "€", "—", "<table>", "a < b", "<div>", "x>y"]
ASCII = "".join(chr(c) for c in range(32, 127) if chr(c) != "<") + "\t\n"


def _json_value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value whose strings need escapes."""
    pick = rng.randrange(6 if depth < 3 else 3)
    if pick == 0:
        return rng.choice([0, -1, 3.25, 1e-7, 12345678901234, True, False, None])
    if pick in (1, 2):
        return "".join(rng.choice(['"', "\\", "\n", "é", "\t", "a", "Z", " ", "/", "\u0001", "日", "😀"])
                       for _ in range(rng.randrange(12)))
    if pick == 3:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": _json_value(rng, depth + 1) for i in range(rng.randrange(4))}


def _segment(rng: random.Random) -> str:
    """One random piece of text from a random category."""
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice(ASCII) for _ in range(rng.randrange(1, 60)))
    if kind == 1:
        value = _json_value(rng)
        return json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
    if kind == 2:
        ranges = [(0x4E00, 0x9FFF), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xD7A3)]
        return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randrange(1, 20))) + "，。"
    if kind == 3:
        return rng.choice(["", " "]).join(rng.choice(EMOJI + [chr(rng.randint(0x1F300, 0x1F64F))])
                                          for _ in range(rng.randrange(1, 6)))
    if kind == 4:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))
    return "".join(rng.choice([" ", "  ", "\n", "\n\n", "\t", "\r\n", "    "]) for _ in range(rng.randrange(1, 8)))


def generate_texts(seed: int, count: int = N_TEXTS) -> list[str]:
    """Seeded random texts mixing all categories; NFC so that normalizers are lossless."""
    rng = random.Random(seed)
    texts = ["".join(_segment(rng) for _ in range(rng.randrange(1, 5))) for _ in range(count)]
    return [unicodedata.normalize("NFC", t) for t in texts if t]


# ---------------------------------------------------------------- round trip


def assert_round_trip(name: str, texts: list[str]) -> None:
    """Token bytes of the real encoding equal the text's UTF-8 (plus the detected prefix space)."""
    tok, vocab = load(name)
    prefix = b" " if vocab.prefix_space else b""
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        assert not vocab.special_ids.intersection(enc.ids), (name, text)
        assert vocab.decode_bytes(enc.ids) == prefix + text.encode(), (name, text, enc.tokens)


@pytest.mark.parametrize("name", REAL + MINI)
def test_round_trip_random_texts(name: str) -> None:
    assert_round_trip(name, generate_texts(seed=sum(map(ord, name))))


@pytest.mark.parametrize("name", REAL + MINI)
def test_single_tokens_agree_with_tokenizers_decode(name: str) -> None:
    tok, vocab = load(name)
    ids = [i for i, b in enumerate(vocab.token_bytes) if b is not None]
    for i, text in zip(ids, tok.decode_batch([[i] for i in ids], skip_special_tokens=False)):
        try:
            mine = vocab.token_bytes[i].decode()
        except UnicodeDecodeError:
            continue  # partial UTF-8: tokenizers would show U+FFFD, which is the point of this table
        # llama2's Strip decoder drops the leading space of a lone token; the table keeps it.
        assert text == mine or (vocab.prefix_space and " " + text == mine), (name, i, text, mine)


@pytest.mark.parametrize("name", REAL + MINI)
def test_n_ids_is_highest_id_plus_one_and_kind(name: str) -> None:
    data = raw_json(name)
    highest = max(max(data["model"]["vocab"].values()), max(t["id"] for t in data["added_tokens"]))
    _, vocab = load(name)
    assert vocab.n_ids == highest + 1 == len(vocab.token_bytes)
    expected_kind = "byte_fallback" if "llama2" in name or name == "gemma3" else "byte_level"
    assert vocab.kind == expected_kind
    assert vocab.prefix_space == ("llama2" in name)
    specials = {t["id"] for t in data["added_tokens"] if t["special"]}
    assert specials <= vocab.special_ids
    assert all(vocab.token_bytes[i] is None for i in vocab.special_ids)
    ids = vocab.text_ids()
    assert ids.dtype == np.int32 and not set(ids.tolist()) & vocab.special_ids
    assert all(vocab.token_bytes[i] for i in ids[:: max(1, len(ids) // 997)])


def test_qwen3_tokenizer_is_narrower_than_its_logits() -> None:
    _, vocab = load("qwen3")
    assert vocab.n_ids == 151669 < 151936  # masks must be sized from the logits, not n_ids


# --------------------------------------------------------------- known tokens


def _id(name: str, piece: str) -> int:
    tok, _ = load(name)
    i = tok.token_to_id(piece)
    assert i is not None, piece
    return i


@pytest.mark.parametrize("name", ["llama3", "mini_llama3"])
def test_llama3_known_tokens(name: str) -> None:
    tok, vocab = load(name)
    base = 128000 if name == "llama3" else 8000
    assert vocab.token_bytes[_id(name, "ð")] == b"\xf0"  # lead byte of every 4-byte emoji
    assert vocab.token_bytes[_id(name, "Ġ")] == b" "
    assert vocab.token_bytes[_id(name, "Ċ")] == b"\n"
    assert vocab.token_bytes[_id(name, "Ġthe")] == b" the"
    parts = [vocab.token_bytes[i] for i in tok.encode("😀", add_special_tokens=False).ids]
    assert b"".join(parts) == "😀".encode() and len(parts) > 1
    for offset in (0, 1, 9):  # <|begin_of_text|>, <|end_of_text|>, <|eot_id|>
        assert base + offset in vocab.special_ids and vocab.token_bytes[base + offset] is None
    with pytest.raises(VocabularyError, match=str(base + 9)):
        vocab.decode_bytes([_id(name, "Ġthe"), base + 9])


def test_llama3_end_ids_from_tokenizer_config() -> None:
    _, vocab = load("llama3")
    assert vocab.end_ids == {128001}  # tokenizer_config names only <|end_of_text|>


@pytest.mark.parametrize("name", ["llama2", "mini_llama2"])
def test_llama2_known_tokens(name: str) -> None:
    _, vocab = load(name)
    assert vocab.token_bytes[_id(name, "<0x0A>")] == b"\n"
    assert vocab.token_bytes[_id(name, "<0xF0>")] == b"\xf0"
    assert vocab.token_bytes[_id(name, "▁the")] == b" the"
    assert vocab.token_bytes[_id(name, "▁")] == b" "
    assert {0, 1, 2} <= vocab.special_ids and 2 in vocab.end_ids
    assert all(vocab.token_bytes[3 + b] == bytes([b]) for b in range(256))


def test_mini_llama2_has_holes() -> None:
    _, vocab = load("mini_llama2")
    assert vocab.token_bytes[5000] is None and 5000 not in vocab.special_ids
    with pytest.raises(VocabularyError, match="5000 does not exist"):
        vocab.decode_bytes([5000])
    with pytest.raises(VocabularyError, match="outside"):
        vocab.decode_bytes([vocab.n_ids])


def test_gemma3_known_tokens() -> None:
    _, vocab = load("gemma3")
    assert {0, 1, 2, 3, 105, 106, 262144} <= vocab.special_ids  # pad eos bos unk turn markers image
    assert 106 in vocab.end_ids  # tokenizer_config eos is <end_of_turn>
    assert vocab.token_bytes[_id("gemma3", "▁▁")] == b"  "  # non-special added token, decoded
    assert vocab.token_bytes[_id("gemma3", "\n\n")] == b"\n\n"
    assert vocab.token_bytes[_id("gemma3", "<0xF0>")] == b"\xf0"
    assert vocab.token_bytes[_id("gemma3", "▁Hello")] == b" Hello"
    assert vocab.token_bytes[_id("gemma3", "<unused0>")] == b"<unused0>"  # not special in the file


def test_qwen3_and_deepseek_known_tokens() -> None:
    _, qwen = load("qwen3")
    assert qwen.token_bytes[151667] == b"<think>" and 151667 not in qwen.special_ids
    assert 151645 in qwen.end_ids and 151645 in qwen.special_ids  # <|im_end|>
    _, deepseek = load("deepseek_v3")
    hole = _id("deepseek_v3", "<｜fim▁hole｜>")
    assert deepseek.token_bytes[hole] == "<｜fim▁hole｜>".encode()
    assert 1 in deepseek.end_ids and deepseek.token_bytes[1] is None


# ------------------------------------------------------------------ end ids


def _model_folder(tmp_path: Path, name: str, **configs: dict) -> Path:
    """A model folder with tokenizer.json (decompressed) and the given JSON config files."""
    source = _path(name)
    (tmp_path / "tokenizer.json").write_bytes(lzma.decompress(source.read_bytes()))
    side = source.parent / source.name.replace(".tokenizer.json.xz", ".tokenizer_config.json")
    if side.is_file():
        shutil.copyfile(side, tmp_path / "tokenizer_config.json")
    for file, content in configs.items():
        (tmp_path / f"{file}.json").write_text(json.dumps(content))
    return tmp_path


def test_llama3_instruct_end_ids(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, "llama3", config={"eos_token_id": [128001, 128008, 128009]})
    vocab = TokenVocabulary.from_file(folder)
    assert vocab.end_ids >= {128001, 128008, 128009}
    assert TokenVocabulary.from_file(folder, model_dir_files=False).end_ids == {128001, 128009}  # fallback


def test_end_ids_union_of_all_sources(tmp_path: Path) -> None:
    folder = _model_folder(
        tmp_path, "mini_llama3",
        config={"text_config": {"eos_token_id": 8008}, "eos_token_id": [8009, 9000]},
        generation_config={"eos_token_id": 8002},
        tokenizer_config={"eos_token": {"content": "<|end_of_text|>"}},
    )
    vocab = TokenVocabulary.from_file(folder / "tokenizer.json", extra_end_ids=[8003])
    assert vocab.end_ids == {8001, 8002, 8003, 8008, 8009, 9000}
    assert 9000 >= vocab.n_ids and 9000 not in vocab.special_ids  # kept: logits may be wider
    assert {8001, 8002, 8003, 8008, 8009} <= vocab.special_ids


def test_fallback_end_ids_and_default_vocabulary() -> None:
    vocab = default_vocabulary()
    assert vocab is default_vocabulary()
    assert vocab.n_ids == 8256 and vocab.kind == "byte_level"
    assert vocab.end_ids == {8001, 8009}  # <|end_of_text|>, <|eot_id|> by name
    assert vocab.fingerprint == load("mini_llama3")[1].fingerprint


def test_bad_eos_config_names_file(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, "mini_llama3", config={"eos_token_id": "nope"})
    with pytest.raises(VocabularyError, match="config.json"):
        TokenVocabulary.from_file(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(VocabularyError, match="config.json"):
        TokenVocabulary.from_file(folder)


# ------------------------------------------------------- construction, misc


def test_fingerprint_is_stable_and_sensitive() -> None:
    text = lzma.decompress(_path("mini_llama3").read_bytes()).decode()
    a = TokenVocabulary.from_json_str(text)
    b = TokenVocabulary.from_json_str(text, source="elsewhere")
    c = TokenVocabulary.from_json_str(text, extra_end_ids=[42])
    assert a.fingerprint == b.fingerprint != c.fingerprint and len(a.fingerprint) == 64
    assert TokenVocabulary([b"a", b"b"]).fingerprint != TokenVocabulary([b"ab", b""]).fingerprint


def test_direct_constructor() -> None:
    vocab = TokenVocabulary([b"a", b"zz", b"", None, b"\xf0"], special_ids=[1], end_ids=[1, 7])
    assert vocab.n_ids == 5 and vocab.token_bytes[1] is None
    assert vocab.text_ids().tolist() == [0, 4]
    assert vocab.decode_bytes(np.array([0, 4, 0])) == b"a\xf0a"
    with pytest.raises(VocabularyError, match="end-of-generation"):
        vocab.decode_bytes([1])


def test_byte_to_unicode_table() -> None:
    table = byte_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[0x20] == "Ġ" and table[0x0A] == "Ċ" and table[0xAD] == "Ń"


def test_build_from_loaded_tokenizer() -> None:
    """Building from an already loaded tokenizer object gives the same table as from its file
    (how fast it is belongs to a benchmark, not a test)."""
    tok, from_file = load("llama3")
    vocab = TokenVocabulary.from_tokenizer(tok)
    assert vocab.n_ids == from_file.n_ids and list(vocab.token_bytes) == list(from_file.token_bytes)


# ------------------------------------------------------------------- errors


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="nowhere.json"):
        TokenVocabulary.from_file(tmp_path / "nowhere.json")
    with pytest.raises(VocabularyError, match=f"{tmp_path.name}.*no tokenizer.json"):
        TokenVocabulary.from_file(tmp_path)


def test_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", ')
    with pytest.raises(VocabularyError, match=f"{bad}.*malformed"):
        TokenVocabulary.from_file(bad)
    broken_xz = tmp_path / "broken.tokenizer.json.xz"
    broken_xz.write_bytes(_path("mini_llama3").read_bytes()[:1000])
    with pytest.raises(VocabularyError, match="broken.tokenizer.json.xz"):
        TokenVocabulary.from_file(broken_xz)


def _write_tokenizer(tmp_path: Path, tok: tokenizers.Tokenizer) -> Path:
    path = tmp_path / "odd.tokenizer.json"
    path.write_text(tok.to_str())
    return path


def test_unsupported_models_and_decoders(tmp_path: Path) -> None:
    from tokenizers import decoders, models

    wordpiece = tokenizers.Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wordpiece.decoder = decoders.WordPiece()
    with pytest.raises(VocabularyError, match="odd.tokenizer.json.*WordPiece"):
        TokenVocabulary.from_file(_write_tokenizer(tmp_path, wordpiece))
    unigram = tokenizers.Tokenizer(models.Unigram([("<unk>", 0.0), ("▁a", -1.0)], 0, False))
    unigram.decoder = decoders.Metaspace()
    with pytest.raises(VocabularyError, match="odd.tokenizer.json.*Unigram without byte_fallback"):
        TokenVocabulary.from_file(_write_tokenizer(tmp_path, unigram))
    bpe = tokenizers.Tokenizer(models.BPE({"a": 0, "b": 1}, []))
    bpe.decoder = decoders.CTC()
    with pytest.raises(VocabularyError, match="odd.tokenizer.json.*CTC"):
        TokenVocabulary.from_file(_write_tokenizer(tmp_path, bpe))
    data = json.loads(wordpiece.to_str())
    data["model"]["type"] = "Mystery"
    (tmp_path / "odd.tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(VocabularyError, match="odd.tokenizer.json.*'Mystery'"):
        TokenVocabulary.from_file(tmp_path / "odd.tokenizer.json")


def test_self_check_catches_a_wrong_table(tmp_path: Path) -> None:
    data = raw_json("mini_llama3")
    data["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    data["model"]["byte_fallback"] = True  # claims <0xNN> pieces, but the vocab is byte-level
    with pytest.raises(VocabularyError, match="self check failed on"):
        TokenVocabulary.from_json_str(json.dumps(data), source="mutated")


# ------------------------------------------------ ExLlamaV2 (the real tokenizer, over the CPU stand-in)
# The real exllamav2 0.3.2 ExLlamaV2Config / ExLlamaV2Tokenizer, imported over tests/exl2_cpu_stub.py
# (the ``exl2`` fixture), on a tiny model folder whose tokenizer is the mini Llama 3 one.


def test_from_exllamav2_real_tokenizer(exl2, exl2_model_dir) -> None:
    from exllamav2 import ExLlamaV2Config, ExLlamaV2Tokenizer

    folder = exl2_model_dir("mini", eos_token_id=[8001, 8009])
    config = ExLlamaV2Config(str(folder))
    exl2_tok = ExLlamaV2Tokenizer(config)
    vocab = TokenVocabulary.from_exllamav2(exl2_tok, config)
    assert vocab.token_bytes == default_vocabulary().token_bytes
    assert {8001, 8009} <= vocab.end_ids
    assert exl2_tok.eos_token_id in vocab.end_ids
    assert TokenVocabulary.from_exllamav2(exl2_tok, config) is vocab  # cached per tokenizer object
    other = TokenVocabulary.from_exllamav2(exl2_tok, config, extra_end_ids=[5])
    assert other is not vocab and 5 in other.end_ids


def test_engine_never_imports_an_inference_library() -> None:
    """tokens/, compile/, engine/ and the grammar/matcher layer stay free of exllamav2 and torch."""
    pkg = ROOT / "exl2_enforcer"
    files = [p for d in ("tokens", "compile", "engine") for p in (pkg / d).rglob("*.py")]
    files += [pkg / "grammar.py", pkg / "matcher.py"]
    assert len(files) > 10
    for path in files:
        source = path.read_text()
        for lib in ("exllamav2", "torch"):
            assert f"import {lib}" not in source and f"from {lib}" not in source, (path, lib)


def test_from_exllamav2_without_hf_tokenizer_reads_the_folder(exl2, exl2_model_dir) -> None:
    """A SentencePiece-only ExLlamaV2 tokenizer has no hf_tokenizer: tokenizer.json is read instead."""
    from exllamav2 import ExLlamaV2Config, ExLlamaV2Tokenizer

    config = ExLlamaV2Config(str(exl2_model_dir("mini")))
    exl2_tok = ExLlamaV2Tokenizer(config)
    exl2_tok.tokenizer_model.hf_tokenizer = None
    assert TokenVocabulary.from_exllamav2(exl2_tok, config).token_bytes == default_vocabulary().token_bytes
    config.model_dir = None
    with pytest.raises(VocabularyError, match="no hf_tokenizer and the config no model_dir"):
        TokenVocabulary.from_exllamav2(exl2_tok, config)


def test_engine_imports_neither_exllamav2_nor_torch() -> None:
    """The facade and the engine work without exllamav2 and torch (both only in the extras)."""
    code = ("import sys\n"
            "import exl2_enforcer, exl2_enforcer.tokens.vocabulary, exl2_enforcer.grammar, exl2_enforcer.matcher\n"
            "g = exl2_enforcer.compile_json_schema({'type': 'integer'}, exl2_enforcer.default_vocabulary())\n"
            "exl2_enforcer.fill_bitmask(exl2_enforcer.Matcher(g), exl2_enforcer.allocate_bitmask(8256), 8256)\n"
            "print(sorted(m for m in ('exllamav2', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_packaged_vocabulary_found_when_the_clone_shadows_the_package(tmp_path: Path) -> None:
    """From the clone's parent folder, a folder named exl2_enforcer (the clone) is imported as a
    namespace package in front of an editable install's finder; the packaged vocabulary must still
    be found (it used to be looked up through the top-level package: 'cannot read the packaged
    vocabulary')."""
    (tmp_path / "exl2_enforcer").mkdir()  # the clone, as seen from its parent folder
    code = f"""
import sys
from importlib.machinery import PathFinder

class EditableFinder:  # what setuptools' default editable install appends to sys.meta_path
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "exl2_enforcer":
            return PathFinder.find_spec(name, [{str(ROOT)!r}])
        if name.count(".") == 1 and name.startswith("exl2_enforcer."):  # its direct children
            return PathFinder.find_spec(name, [{str(ROOT / "exl2_enforcer")!r}])
        return None

sys.meta_path.append(EditableFinder)
import exl2_enforcer.tokens.vocabulary as v
print(v.default_vocabulary().n_ids)
"""
    env = {k: val for k, val in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "8256"
# ------------------------------------------------------- added tokens are not text


@pytest.mark.parametrize("name,pieces", [
    ("qwen3", ["</tool_call>", "<tool_call>", "</think>", "<think>"]),
    ("deepseek_v3", ["<｜tool▁call▁end｜>", "<｜tool▁calls▁begin｜>"]),
    ("gemma3", ["<unused0>", "<unused5>"]),
])
def test_added_control_tokens_are_not_text_by_default(name: str, pieces: list[str]) -> None:
    """Non-special added tokens are chat markup: they keep their bytes (free text, triggers) but
    are no constrained text, so no mask offers them."""
    from exl2_enforcer.engine.mask import TokenIndex

    vocab = load_default(name)
    _, as_text = load(name)
    constrained = set(TokenIndex.for_vocabulary(vocab).text_ids.tolist())
    for piece in pieces:
        i = _id(name, piece)
        assert i in vocab.markup_ids and i not in constrained, (name, piece)
        assert vocab.token_bytes[i] == as_text.token_bytes[i] == piece.encode(), (name, piece)
    assert not as_text.markup_ids
    assert vocab.fingerprint != as_text.fingerprint


def test_whitespace_added_tokens_stay_text() -> None:
    vocab = load_default("gemma3")
    assert vocab.token_bytes[_id("gemma3", "▁▁")] == b"  "


@pytest.mark.parametrize("name,piece", [("qwen3", "</tool_call>"), ("deepseek_v3", "<｜tool▁call▁end｜>")])
def test_masks_never_offer_control_tokens_inside_strings(name: str, piece: str) -> None:
    from exl2_enforcer.grammar import compile_json_schema
    from exl2_enforcer.matcher import Matcher

    vocab = load_default(name)
    g = compile_json_schema({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}, vocab)
    m = Matcher(g)
    for tid in tok_ids(name, '{"s": "x'):
        assert m.try_accept(tid)
    assert _id(name, piece) not in set(m.allowed_ids().tolist())
    assert not m.try_accept(_id(name, piece))  # the matcher refuses it too
    # with added tokens as text the same string position offers it (the option works)
    _, as_text = load(name)
    g2 = compile_json_schema({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]},
                             as_text)
    m2 = Matcher(g2)
    for tid in tok_ids(name, '{"s": "x'):
        assert m2.try_accept(tid)
    assert _id(name, piece) in set(m2.allowed_ids().tolist())


def tok_ids(name: str, text: str) -> list[int]:
    tok, _ = load(name)
    return tok.encode(text, add_special_tokens=False).ids
