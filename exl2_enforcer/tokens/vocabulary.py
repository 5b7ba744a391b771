"""Exact byte vocabulary of a Hugging Face tokenizer.

:class:`TokenVocabulary` knows, for every token id, the exact bytes the token adds to
the decoded output.  Constraints work on bytes, so this table is what lets them decide
which tokens may follow a given prefix.  It is built from the ``tokenizer.json``
``model`` and ``decoder`` sections (see :mod:`exl2_enforcer.tokens.bytemaps`) and verified
against the real tokenizer with a round-trip check on fixed probe texts.

Logits width: the vocabulary never assumes how wide a model's logits are.  Many
models pad their output layer beyond the tokenizer (Qwen 3: 151,669 ids but 151,936
logits; Llama 3.2 Vision's tokenizer reports 128,000 while its logits have 128,256).
Masks are sized later from the logits tensor; ids at or beyond ``n_ids`` simply have no
text.  For the same reason an end id given by a config file is kept even when it is
``>= n_ids``: it can still exist in the model's output layer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exl2_enforcer.errors import VocabularyError
from exl2_enforcer.tokens.bytemaps import KIND_BYTE_FALLBACK, KIND_BYTE_LEVEL, PROBE_TEXTS, build_tables, self_check

if TYPE_CHECKING:  # tokenizers is a hard dependency, but keep import cost out of typing
    import tokenizers

__all__ = ["TokenVocabulary", "default_vocabulary", "PROBE_TEXTS"]

#: Token names used as end ids when no config names an eos token.
FALLBACK_END_NAMES: tuple[str, ...] = (
    "</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<eos>", "<end_of_turn>",
)

_SIDE_FILES = ("tokenizer_config", "config", "generation_config")

#: end ids at or above this are refused: masks are as wide as the largest end id,
#: so a bogus id (4294967295 in a config.json) would size every mask at 512 MiB
MAX_END_ID = 1 << 24
_CONFIG_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class TokenVocabulary:
    """Exact bytes of every token id, plus which ids are special and which end generation.

    ``token_bytes[i]`` is what id ``i`` contributes in the middle of a generation, or
    ``None`` for special/control ids and for holes with no token.  ``special_ids`` are
    never text; ``end_ids`` end generation (end ids below ``n_ids`` are also special, since
    they must never be read as text).  ``kind`` is ``"byte_level"`` or ``"byte_fallback"``.
    ``prefix_space`` tells whether the tokenizer's encoder adds one space at the start of
    a text (SentencePiece-style normalizers); it is informational.

    Not modeled: decoders that strip one leading space from the whole output (Llama 2's
    ``Strip``, ``Metaspace``) make ``▁Hello`` show as ``Hello`` when it is the very first
    token decoded, yet here it is always ``b" Hello"``.  That is harmless for constrained
    decoding: the filter only ever sees tokens that continue a prompt, never the start of
    the decoded text.
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes | None],
        *,
        special_ids: Iterable[int] = (),
        end_ids: Iterable[int] = (),
        kind: str = KIND_BYTE_LEVEL,
        source: str = "<memory>",
        prefix_space: bool = False,
        markup_ids: Iterable[int] = (),
    ) -> None:
        """Wrap an explicit table; ``special_ids`` and in-range ``end_ids`` get ``None`` bytes.

        ``markup_ids`` keep their bytes (free text and triggers see them) but are never part of
        constrained text: token masks leave them out and a :class:`~.matcher.Matcher` refuses them.
        """
        if kind not in (KIND_BYTE_LEVEL, KIND_BYTE_FALLBACK):
            raise VocabularyError(f"{source}: unknown vocabulary kind {kind!r}")
        table = list(token_bytes)
        n_ids = len(table)
        ends = frozenset(int(i) for i in end_ids)
        if any(i < 0 for i in ends):
            raise VocabularyError(f"{source}: negative end id in {sorted(ends)}")
        too_big = sorted(i for i in ends if i >= MAX_END_ID)
        if too_big:
            raise VocabularyError(f"{source}: end id {too_big[0]} is absurd (>= 2**24 = {MAX_END_ID}; masks are as"
                                  " wide as the largest end id); fix eos_token_id in the config or extra_end_ids")
        specials = set(int(i) for i in special_ids) | {i for i in ends if 0 <= i < n_ids}
        for i in specials:
            if not 0 <= i < n_ids:
                raise VocabularyError(f"{source}: special id {i} outside 0..{n_ids - 1}")
            table[i] = None
        self.token_bytes: list[bytes | None] = table
        self.n_ids: int = n_ids
        self.special_ids: frozenset[int] = frozenset(specials)
        self.end_ids: frozenset[int] = ends
        self.kind: str = kind
        self.source: str = source
        self.prefix_space: bool = prefix_space
        self.markup_ids: frozenset[int] = frozenset(int(i) for i in markup_ids if 0 <= int(i) < n_ids) - specials
        lengths = np.fromiter((-1 if b is None else len(b) for b in table), dtype=np.int64, count=n_ids)
        self._text_ids = np.nonzero(lengths > 0)[0].astype(np.int32)
        self._text_ids.setflags(write=False)
        self.fingerprint: str = _fingerprint(table, lengths, self.special_ids, ends, self.markup_ids)

    # ----------------------------------------------------------------- builders

    @classmethod
    def from_file(
        cls, path: str | Path, *, model_dir_files: bool = True, extra_end_ids: Iterable[int] = (),
        added_tokens_as_text: bool = False,
    ) -> "TokenVocabulary":
        """Build from ``tokenizer.json``, ``tokenizer.json.xz`` or a model folder holding one.

        With ``model_dir_files`` the file's folder is searched for ``tokenizer_config.json``,
        ``config.json`` and ``generation_config.json`` (also ``PREFIX.tokenizer_config.json``
        next to ``PREFIX.tokenizer.json[.xz]``) to find the eos ids.
        """
        file = _find_tokenizer_file(Path(path))
        text = _read_text(file)
        side: dict[str, dict[str, Any] | None] = dict.fromkeys(_SIDE_FILES)
        if model_dir_files:
            side = _read_side_files(file)
        return cls.from_json_str(text, **side, extra_end_ids=extra_end_ids, source=str(file),
                                 added_tokens_as_text=added_tokens_as_text)

    @classmethod
    def from_json_str(
        cls,
        text: str,
        *,
        tokenizer_config: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        extra_end_ids: Iterable[int] = (),
        source: str = "<string>",
        added_tokens_as_text: bool = False,
    ) -> "TokenVocabulary":
        """Build from the text of a ``tokenizer.json``; the three configs are parsed JSON dicts."""
        tok = _load_tokenizer(text, source)
        return cls.from_tokenizer(
            tok, tokenizer_config=tokenizer_config, config=config,
            generation_config=generation_config, extra_end_ids=extra_end_ids, source=source,
            added_tokens_as_text=added_tokens_as_text,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tok: "tokenizers.Tokenizer",
        *,
        tokenizer_config: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        extra_end_ids: Iterable[int] = (),
        source: str = "<tokenizer>",
        added_tokens_as_text: bool = False,
    ) -> "TokenVocabulary":
        """Build from a loaded ``tokenizers.Tokenizer``; same keyword arguments as :meth:`from_json_str`.

        ``added_tokens_as_text`` -- False (default): added tokens that ``tokenizer.json`` does not
        mark special (Qwen 3 ``</tool_call>``, ``</think>``; DeepSeek V3 ``<｜tool▁call▁end｜>``;
        Gemma 3 ``<unusedN>``) are chat-control markup: they are ``markup_ids``, which keep their
        bytes (a two-phase trigger such as ``<tool_call>`` still sees them in free text) but
        never appear inside constrained output.  Added tokens made of whitespace only (Gemma 3's
        ``▁▁`` runs) are plain text.  True: every non-special added token is plain text.
        """
        pieces, specials, kind = build_tables(tok, source)
        n_ids = len(pieces)
        markup = set() if added_tokens_as_text else _markup_added_ids(tok, pieces)
        specials |= _ids_of(tok, _config_special_names(tokenizer_config), n_ids)
        ends = _collect_end_ids(tok, tokenizer_config, config, generation_config, extra_end_ids, source)
        if not ends:
            raise VocabularyError(f"{source}: no end-of-generation id found (no eos_token_id in the configs, no eos"
                                  f" token in tokenizer_config, none of {', '.join(FALLBACK_END_NAMES)});"
                                  " pass extra_end_ids")
        vocab = cls(pieces, special_ids=specials, end_ids=ends, kind=kind, source=source, markup_ids=markup)
        vocab.prefix_space = self_check(vocab, tok, PROBE_TEXTS)
        return vocab

    @classmethod
    def from_exllamav2(cls, tokenizer: Any, config: Any, extra_end_ids: Iterable[int] = (),
                       added_tokens_as_text: bool = False) -> "TokenVocabulary":
        """Build from an ``ExLlamaV2Tokenizer`` and its ``ExLlamaV2Config`` (duck-typed).

        Uses ``tokenizer.tokenizer_model.hf_tokenizer`` (a ``tokenizers.Tokenizer``) and the
        JSON files in ``config.model_dir``.  ExLlamaV2's ``get_id_to_piece_list()`` is not
        used: it turns partial UTF-8 into U+FFFD and specials into ''.  Results are cached
        per tokenizer object, so asking twice is free.
        """
        model_dir = getattr(config, "model_dir", None)
        extra = list(extra_end_ids)
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, int) and not isinstance(eos, bool):
            extra.append(eos)
        key = (str(model_dir), tuple(sorted(set(extra))), added_tokens_as_text)
        cache = _exl2_cache_for(tokenizer)
        if key not in cache:
            cache[key] = _build_from_exllamav2(cls, tokenizer, model_dir, extra, added_tokens_as_text)
        return cache[key]

    # ------------------------------------------------------------------ queries

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of ``ids``; raise VocabularyError naming any id without text."""
        table = self.token_bytes
        n_ids = self.n_ids
        out: list[bytes] = []
        for raw in ids:
            i = int(raw)
            piece = table[i] if 0 <= i < n_ids else None
            if piece is None:
                raise VocabularyError(self._why_no_text(i))
            out.append(piece)
        return b"".join(out)

    def text_ids(self) -> np.ndarray:
        """Return the int32 ids whose bytes are non-empty (read-only array, ascending)."""
        return self._text_ids

    def __len__(self) -> int:
        """Number of ids, ``n_ids``."""
        return self.n_ids

    def __repr__(self) -> str:
        """Short summary for logs."""
        return (
            f"TokenVocabulary(kind={self.kind!r}, n_ids={self.n_ids}, specials={len(self.special_ids)}, "
            f"end_ids={sorted(self.end_ids)}, source={self.source!r})"
        )

    def _why_no_text(self, i: int) -> str:
        """Explain why id ``i`` cannot be decoded to text."""
        if not 0 <= i < self.n_ids:
            return f"token id {i} is outside this vocabulary (0..{self.n_ids - 1}) of {self.source}"
        if i in self.end_ids:
            return f"token id {i} is an end-of-generation token and has no text ({self.source})"
        if i in self.special_ids:
            return f"token id {i} is a special token and has no text ({self.source})"
        return f"token id {i} does not exist in {self.source}"


#: file name of the packaged vocabulary in ``exl2_enforcer/data``
PACKAGED_VOCABULARY = "mini_llama3.tokenizer.json.xz"


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> TokenVocabulary:
    """Return the vocabulary shipped with the package (a truncated real Llama 3 tokenizer).

    It has 8,000 text ids plus Llama 3's 256 special tokens renumbered to 8000..8255; the
    CLI uses it when no model is given.  Loaded once and cached.
    """
    # Anchored on this file, not on the top-level package name: from the clone's parent folder
    # the clone itself (a folder also named exl2_enforcer) can be imported as a namespace package
    # in front of an editable install, and files("exl2_enforcer") then points into the clone's root.
    resource = Path(__file__).resolve().parent.parent / "data" / PACKAGED_VOCABULARY
    try:
        text = lzma.decompress(resource.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{resource}: cannot read the packaged vocabulary: {exc}") from exc
    return TokenVocabulary.from_json_str(text, source=str(resource))


# ---------------------------------------------------------------------- helpers


def _fingerprint(
    table: Sequence[bytes | None], lengths: np.ndarray, specials: frozenset[int], ends: frozenset[int],
    markup: frozenset[int] = frozenset(),
) -> str:
    """Hash the table injectively: lengths (-1 for None), then all bytes, then the id sets."""
    digest = hashlib.sha256(b"exl2_enforcer.tokens.vocabulary.v1")
    digest.update(lengths.astype("<i8").tobytes())
    digest.update(b"".join(b for b in table if b))
    digest.update(np.array(sorted(specials), dtype="<i8").tobytes())
    digest.update(b"|")
    digest.update(np.array(sorted(ends), dtype="<i8").tobytes())
    if markup:
        digest.update(b"|markup|")
        digest.update(np.array(sorted(markup), dtype="<i8").tobytes())
    return digest.hexdigest()


def _token_name(value: Any) -> str | None:
    """Token string of a tokenizer_config entry: a plain string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _config_special_names(tokenizer_config: Mapping[str, Any] | None) -> list[str]:
    """Token strings tokenizer_config.json declares special (bos/eos/unk/pad and the rest)."""
    if not tokenizer_config:
        return []
    values = [tokenizer_config.get(key) for key in _CONFIG_SPECIAL_KEYS]
    values += list(tokenizer_config.get("additional_special_tokens") or [])
    decoder = tokenizer_config.get("added_tokens_decoder") or {}
    values += [v for v in decoder.values() if isinstance(v, dict) and v.get("special")]
    return [name for name in map(_token_name, values) if name]


def _eos_ids(value: Any, where: str) -> set[int]:
    """Normalize an ``eos_token_id`` entry (None, int or list of ints)."""
    if value is None:
        return set()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise VocabularyError(f"{where}: eos_token_id must be a non-negative int or list of them, got {value!r}")
    return set(values)


def _collect_end_ids(
    tok: "tokenizers.Tokenizer",
    tokenizer_config: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    generation_config: Mapping[str, Any] | None,
    extra_end_ids: Iterable[int],
    source: str,
) -> set[int]:
    """Union of the eos ids of all configs and ``extra_end_ids``; fall back to known names.

    Ids from configs are kept even beyond the tokenizer's ids (see the module docstring).
    """
    ends: set[int] = set()
    for cfg, name in ((config, "config.json"), (generation_config, "generation_config.json")):
        for part in (cfg or {}, (cfg or {}).get("text_config") or {}):
            if isinstance(part, Mapping):
                ends |= _eos_ids(part.get("eos_token_id"), f"{source} ({name})")
    eos_name = _token_name((tokenizer_config or {}).get("eos_token"))
    eos_id = tok.token_to_id(eos_name) if eos_name else None
    if eos_id is not None:
        ends.add(eos_id)
    if not ends:
        ends = {i for i in map(tok.token_to_id, FALLBACK_END_NAMES) if i is not None}
    return ends | _eos_ids(list(extra_end_ids), f"{source} (extra_end_ids)")


def _markup_added_ids(tok: "tokenizers.Tokenizer", pieces: Sequence[bytes | None]) -> set[int]:
    """Non-special added tokens other than pure whitespace: markup, never constrained text."""
    return {i for i, t in tok.get_added_tokens_decoder().items()
            if not t.special and not (pieces[i] or b"").isspace()}


def _ids_of(tok: "tokenizers.Tokenizer", names: Iterable[str], n_ids: int) -> set[int]:
    """Ids of the token strings ``names`` that exist in ``tok`` (unknown names are ignored)."""
    found = (tok.token_to_id(name) for name in names)
    return {i for i in found if i is not None and 0 <= i < n_ids}


def _find_tokenizer_file(path: Path) -> Path:
    """Resolve a model folder to its tokenizer.json(.xz); check that the file exists."""
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.json.xz"):
            if (path / name).is_file():
                return path / name
        raise VocabularyError(f"{path}: folder has no tokenizer.json")
    if not path.is_file():
        raise VocabularyError(f"{path}: tokenizer file not found")
    return path


def _read_text(file: Path) -> str:
    """Read a possibly xz-compressed UTF-8 file, naming it in any error."""
    try:
        data = lzma.decompress(file.read_bytes()) if file.name.endswith(".xz") else file.read_bytes()
        return data.decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{file}: cannot read tokenizer file: {exc}") from exc


def _read_side_files(file: Path) -> dict[str, dict[str, Any] | None]:
    """Load tokenizer_config/config/generation_config JSON next to ``file`` when present."""
    prefix = file.name.split(".tokenizer.json")[0] if ".tokenizer.json" in file.name else ""
    found: dict[str, dict[str, Any] | None] = {}
    for name in _SIDE_FILES:
        candidates = ([file.parent / f"{prefix}.{name}.json"] if prefix else []) + [file.parent / f"{name}.json"]
        found[name] = next((_read_json(c) for c in candidates if c.is_file()), None)
    return found


def _read_json(file: Path) -> dict[str, Any]:
    """Parse a JSON object file, naming it in any error."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocabularyError(f"{file}: cannot read JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise VocabularyError(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


def _load_tokenizer(text: str, source: str) -> "tokenizers.Tokenizer":
    """Load tokenizer JSON with the tokenizers library; explain failures by source."""
    import tokenizers

    try:
        return tokenizers.Tokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises a bare Exception
        # Re-parse only on failure, to say *why* in terms of the file's content.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as jexc:
            raise VocabularyError(f"{source}: malformed tokenizer JSON: {jexc}") from exc
        model = data.get("model") if isinstance(data, dict) else None
        kind = model.get("type") if isinstance(model, dict) else None
        if kind not in ("BPE", "Unigram", "WordPiece", "WordLevel"):
            raise VocabularyError(f"{source}: unsupported tokenizer model type {kind!r}") from exc
        raise VocabularyError(f"{source}: tokenizers cannot load this file: {exc}") from exc


_Exl2Key = tuple[str, tuple[int, ...], bool]
_EXL2_CACHE: "weakref.WeakKeyDictionary[Any, dict[_Exl2Key, TokenVocabulary]]" = weakref.WeakKeyDictionary()


def _exl2_cache_for(tokenizer: Any) -> dict[_Exl2Key, TokenVocabulary]:
    """Per-tokenizer-object cache dict; dies with the tokenizer."""
    try:
        return _EXL2_CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: keep it on the object itself
        cache = getattr(tokenizer, "_exl2_enforcer_vocab_cache", None)
        if cache is None:
            cache = {}
            tokenizer._exl2_enforcer_vocab_cache = cache
        return cache


def _build_from_exllamav2(
    cls: type[TokenVocabulary], tokenizer: Any, model_dir: str | None, extra: list[int],
    added_tokens_as_text: bool = False,
) -> TokenVocabulary:
    """Uncached body of :meth:`TokenVocabulary.from_exllamav2`."""
    folder = Path(model_dir) if model_dir else None
    side = dict.fromkeys(_SIDE_FILES) if folder is None else _read_side_files(folder / "tokenizer.json")
    hf = getattr(getattr(tokenizer, "tokenizer_model", None), "hf_tokenizer", None)
    if hf is None:
        if folder is None:
            raise VocabularyError("exllamav2 tokenizer has no hf_tokenizer and the config no model_dir")
        # SentencePiece-only ExLlamaV2 tokenizers have no hf_tokenizer; use the file if any.
        file = _find_tokenizer_file(folder)
        return cls.from_json_str(_read_text(file), **side, extra_end_ids=extra, source=str(file),
                                 added_tokens_as_text=added_tokens_as_text)
    source = f"exllamav2 tokenizer of {model_dir or '?'}"
    return cls.from_tokenizer(hf, **side, extra_end_ids=extra, source=source,
                              added_tokens_as_text=added_tokens_as_text)
