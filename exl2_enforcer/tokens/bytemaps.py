"""Turning tokenizer.json piece strings into the exact bytes they decode to.

A Hugging Face ``tokenizer.json`` stores every token as a string, but what a token
contributes to the output is decided by the ``decoder`` section.  This module reads
that section (never the model's name) and builds a function ``piece -> bytes`` that
reproduces, per token, what the tokenizers library's decoder chain does:

* ``ByteLevel`` (GPT-2 style): each character stands for one byte through the
  bytes<->unicode table below.  A piece containing a character outside the table is
  emitted as its own UTF-8, exactly as the Rust decoder falls back.
* SentencePiece style (``Replace "▁"->" "``, ``ByteFallback``, ``Fuse``, ``Strip`` or a
  ``Metaspace`` decoder): ``▁`` becomes a space, ``<0xNN>`` becomes the byte ``NN``,
  everything else is its UTF-8.

Stripping of a leading space at the very start of the whole output (``Strip`` after
``Fuse``, ``Metaspace`` with a prepend scheme) is deliberately not modeled: token bytes
describe what a token adds in the middle of a generation.  A constrained generation
always continues a prompt, so the first filtered token is never the start of the
decoded text and the strip never applies to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exl2_enforcer.errors import VocabularyError

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "PROBE_TEXTS", "DecoderSpec", "analyse_decoder", "build_tables",
    "byte_to_unicode", "make_piece_decoder", "self_check",
]

KIND_BYTE_LEVEL = "byte_level"
KIND_BYTE_FALLBACK = "byte_fallback"

#: Texts encoded by the real tokenizer and decoded with the byte table at construction.
PROBE_TEXTS: tuple[str, ...] = (
    "a",
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    '{"name": "Ada", "age": 36, "ok": true, "tags": ["x", "y"], "none": null}',
    '{"q": "say \\"hi\\"\\n", "path": "C:\\\\dir\\\\f", "e": "\\u00e9\\ud83d\\ude00"}',
    "naïve café — 10 € · ½ ©®™ ñ ß ø",
    "日本語のテキストと中文字符，还有標點。",
    "한국어 텍스트 ภาษาไทย Ελληνικά кириллица עברית العربية हिन्दी",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇯🇵🇫🇷 ❤️ 🏳️‍🌈",
    "  two  spaces\n\n\tindent\r\n   \n \t \n",
    "    def f(x):\n        return x ** 2  # comment\n",
    "1234567890 3.14159e-10 -0.5 0x1F 1_000",
    "tab\there nul\x00 del\x7f bell\x07 nbsp\u00a0 shy\u00ad",
    "     ",
    "\n",
)

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_to_unicode() -> dict[int, str]:
    """Return the GPT-2 table mapping each byte 0..255 to the character that stands for it.

    Printable latin-1 bytes stand for themselves; the remaining 68 bytes (controls,
    space, DEL, NBSP, soft hyphen...) take the characters U+0100, U+0101, ... in byte order,
    so that every piece string is made of visible characters.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass
class DecoderSpec:
    """What a tokenizer's decoder chain does to one token, as far as bytes are concerned.

    ``steps`` holds per-token transforms in order: ``("replace", old, new)`` or
    ``("byte_fallback",)``.  ``strips_output_start`` records a whole-output leading
    strip that is intentionally not applied per token (see the module docstring).
    """

    kind: str
    steps: list[tuple[str, ...]] = field(default_factory=list)
    strips_output_start: bool = False


def analyse_decoder(decoder: dict[str, Any] | None, byte_fallback: bool, source: str) -> DecoderSpec:
    """Classify a tokenizer.json ``decoder`` section; raise VocabularyError when unsupported.

    ``byte_fallback`` is the model's own flag: a model that emits ``<0xNN>`` pieces
    needs them read as bytes even when the decoder chain omits ``ByteFallback``.
    """
    if decoder is None:
        raise VocabularyError(f"{source}: tokenizer has no decoder; cannot tell the bytes of its tokens")
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    types = [p.get("type") for p in parts]
    if "ByteLevel" in types:
        others = [t for t in types if t not in ("ByteLevel", "Fuse")]
        if others:
            raise VocabularyError(f"{source}: unsupported decoder: ByteLevel combined with {others}")
        return DecoderSpec(KIND_BYTE_LEVEL)
    spec = DecoderSpec(KIND_BYTE_FALLBACK)
    fused = False
    for part in parts:
        _add_metaspace_step(spec, part, fused, source)
        fused = fused or part.get("type") == "Fuse"
    has_fallback = any(step[0] == "byte_fallback" for step in spec.steps)
    if byte_fallback and not has_fallback:
        # Without it <0xNN> would decode as literal text, which no real model intends.
        spec.steps.append(("byte_fallback",))
    elif not has_fallback:
        raise VocabularyError(
            f"{source}: decoder {types} has no byte fallback and is not byte-level; "
            "arbitrary bytes cannot be produced by this vocabulary"
        )
    return spec


def _add_metaspace_step(spec: DecoderSpec, part: dict[str, Any], fused: bool, source: str) -> None:
    """Append the per-token effect of one SentencePiece-style decoder to ``spec``."""
    kind = part.get("type")
    if kind == "Replace":
        pattern = part.get("pattern", {})
        if "String" not in pattern:
            raise VocabularyError(f"{source}: unsupported decoder: Replace with pattern {pattern}")
        spec.steps.append(("replace", pattern["String"], part.get("content", "")))
    elif kind == "ByteFallback":
        spec.steps.append(("byte_fallback",))
    elif kind == "Fuse":
        pass  # concatenation is what decode_bytes does anyway
    elif kind == "Metaspace":
        spec.steps.append(("replace", part.get("replacement", "▁"), " "))
        scheme = part.get("prepend_scheme", "always" if part.get("add_prefix_space", True) else "never")
        spec.strips_output_start = spec.strips_output_start or scheme != "never"
    elif kind == "Strip":
        if not fused or part.get("stop", 0):
            # Before Fuse the strip would apply to every token; at the end it would cut
            # the tail of the output.  Neither is a per-token byte mapping.
            raise VocabularyError(f"{source}: unsupported decoder: Strip {part}")
        spec.strips_output_start = True
    else:
        raise VocabularyError(f"{source}: unsupported decoder type {kind!r}")


def make_piece_decoder(spec: DecoderSpec) -> Callable[[str], bytes]:
    """Return a fast function mapping one piece string to the bytes the decoder emits for it."""
    if spec.kind == KIND_BYTE_LEVEL:
        return _byte_level_decoder()
    return _metaspace_decoder(spec.steps)


def _byte_level_decoder() -> Callable[[str], bytes]:
    """Piece decoder for GPT-2 byte-level vocabularies."""
    table = byte_to_unicode()
    translate = str.maketrans({ch: chr(b) for b, ch in table.items()})
    alphabet = "".join(re.escape(ch) for ch in table.values())
    unmappable = re.compile(f"[^{alphabet}]")

    def decode(piece: str) -> bytes:
        if unmappable.search(piece):
            return piece.encode("utf-8")  # the Rust decoder's fallback for such pieces
        return piece.translate(translate).encode("latin-1")

    return decode


def _metaspace_decoder(steps: list[tuple[str, ...]]) -> Callable[[str], bytes]:
    """Piece decoder for SentencePiece-style vocabularies (``▁`` spaces, ``<0xNN>`` bytes)."""
    frozen = tuple(steps)

    def decode(piece: str) -> bytes:
        for step in frozen:
            if step[0] == "replace":
                piece = piece.replace(step[1], step[2])
            elif len(piece) == 6 and piece.startswith("<0x"):
                match = _BYTE_PIECE.fullmatch(piece)
                if match:
                    return bytes((int(match.group(1), 16),))
        return piece.encode("utf-8")

    return decode


def build_tables(tok: "tokenizers.Tokenizer", source: str) -> tuple[list[bytes | None], set[int], str]:
    """Return ``(token_bytes, special_ids, kind)`` for a loaded tokenizer.

    The model vocabulary comes from one bulk ``get_vocab`` call (no per-id calls); added
    tokens override it exactly as they do in the tokenizers library's ``decode``.  Added
    tokens flagged special, and the model's unk token, are special (bytes ``None``); the
    other added tokens go through the same decoder as model pieces.
    """
    byte_fallback, unk_token = _model_flags(tok, source)
    decoder = json.loads(tok.decoder.__getstate__()) if tok.decoder is not None else None
    spec = analyse_decoder(decoder, byte_fallback, source)
    decode = make_piece_decoder(spec)
    vocab: dict[str, int] = tok.get_vocab(with_added_tokens=False)
    added: dict[int, Any] = tok.get_added_tokens_decoder()
    n_ids = 1 + max(max(vocab.values(), default=-1), max(added, default=-1))
    if n_ids == 0:
        raise VocabularyError(f"{source}: tokenizer has an empty vocabulary")
    pieces: list[str | None] = [None] * n_ids
    for piece, i in vocab.items():
        pieces[i] = piece
    specials: set[int] = set()
    for i, token in added.items():
        pieces[i] = None if token.special else token.content
        if token.special:
            specials.add(i)
    if unk_token is not None and unk_token in vocab:
        specials.add(vocab[unk_token])
        pieces[vocab[unk_token]] = None
    table = [None if p is None else decode(p) for p in pieces]
    return table, specials, spec.kind


def _model_flags(tok: "tokenizers.Tokenizer", source: str) -> tuple[bool, str | None]:
    """Return ``(byte_fallback, unk_token)`` of a BPE or Unigram model; reject other models."""
    model = tok.model
    kind = type(model).__name__
    if kind == "BPE":
        return bool(model.byte_fallback), model.unk_token
    if kind == "Unigram":
        # The Python binding exposes neither flag; the serialized model has both.
        state = json.loads(model.__getstate__())
        unk_id = state.get("unk_id")
        unk = state["vocab"][unk_id][0] if unk_id is not None else None
        if not state.get("byte_fallback", False):
            raise VocabularyError(f"{source}: unsupported tokenizer model type Unigram without byte_fallback")
        return True, unk
    raise VocabularyError(f"{source}: unsupported tokenizer model type {kind!r}")


def self_check(vocab: Any, tok: "tokenizers.Tokenizer", probes: Sequence[str]) -> bool:
    """Encode ``probes`` with the real tokenizer and compare with the byte table.

    Returns whether the encoder adds one leading space (detected on ``probes[0]``, which
    must be a short word); each probe must then decode to its UTF-8 exactly, or to one
    space followed by it when a prefix space was detected.  Raises VocabularyError naming
    the source and the first probe that differs.
    """
    encodings = tok.encode_batch(list(probes), add_special_tokens=False)
    prefix_space: bool | None = None
    for text, encoding in zip(probes, encodings):
        expected = text.encode("utf-8")
        try:
            got = vocab.decode_bytes(encoding.ids)
        except VocabularyError as exc:
            raise VocabularyError(f"{vocab.source}: round-trip self check failed on {text!r}: {exc}") from exc
        if prefix_space is None:
            prefix_space = got == b" " + expected
        if got != expected and not (prefix_space and got == b" " + expected):
            raise VocabularyError(
                f"{vocab.source}: round-trip self check failed on {text!r}: "
                f"token bytes give {got!r}, expected {expected!r}"
            )
    return bool(prefix_space)
