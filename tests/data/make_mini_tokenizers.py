"""Make the small real tokenizers committed for tests that run on a fresh clone.

Usage (from the project root, with ../shared/tokenizers present)::

    python tests/data/make_mini_tokenizers.py [SHARED_TOKENIZERS_DIR]

Writes, deterministically:

* ``tests/data/mini_llama3.tokenizer.json.xz`` -- the real Llama 3 ``tokenizer.json``
  truncated to model ids 0..7999 (the 256 byte tokens come first in Llama 3), keeping,
  in rank order, only the BPE merges whose parts and result all have ids < 8000.  The
  256 special added tokens (``<|begin_of_text|>``, ``<|end_of_text|>``, ``<|eot_id|>``...)
  are renumbered from 128000.. to 8000..8255.  Normalizer, pre-tokenizer, decoder and
  post-processor are unchanged.
* ``tests/data/mini_llama2.tokenizer.json.xz`` -- the real Llama 2 ``tokenizer.json``
  truncated the same way to ids 0..3999 (``<unk>``, ``<s>``, ``</s>``, the 256 ``<0xNN>``
  byte tokens, then the most frequent pieces), plus the single-character pieces those
  pieces are made of, at their original ids (28705..28899).  SentencePiece puts single
  characters at the end of the vocabulary; without them BPE could not start merging and
  even ``▁`` would come out as three fallback bytes, which decode as a literal ``▁``
  instead of a space.  The result has holes (ids with no token), which tests use too.
* ``exl2_enforcer/data/mini_llama3.tokenizer.json.xz`` -- a copy of the first, shipped in
  the package as the default vocabulary (:func:`exl2_enforcer.tokens.vocabulary.default_vocabulary`).

Each result is loaded back with ``tokenizers.Tokenizer.from_str`` and checked to
round-trip a few texts before the script exits.
"""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent
CHECK_TEXTS = (
    'Hello, world! {"key": "va\\"lue\\n", "n": [1, 2.5e-3]}',
    "日本語 😀 👨‍👩‍👧 café\n\n\tend  ",
)


def truncate(tokenizer: dict, keep: int, renumber_added: bool, keep_chars: bool) -> dict:
    """Keep model ids < ``keep`` and the merges among them; optionally move added tokens to ``keep``.

    With ``keep_chars``, single-character pieces used by the kept pieces stay too (at their ids).
    """
    model = tokenizer["model"]
    vocab = {piece: i for piece, i in model["vocab"].items() if i < keep}
    if keep_chars:
        used = set("".join(vocab))
        vocab.update({p: i for p, i in model["vocab"].items() if len(p) == 1 and p in used})
    merges = []
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if left in vocab and right in vocab and left + right in vocab:
            merges.append(merge)
    model["vocab"] = vocab
    model["merges"] = merges
    added = sorted(tokenizer["added_tokens"], key=lambda t: t["id"])
    if renumber_added:
        moved = {}
        for offset, token in enumerate(t for t in added if t["id"] >= keep):
            moved[token["id"]] = keep + offset
            token["id"] = keep + offset
        _remap_post_processor(tokenizer.get("post_processor"), moved)
    tokenizer["added_tokens"] = added
    return tokenizer


def _remap_post_processor(processor: dict | None, moved: dict[int, int]) -> None:
    """Renumber special-token ids that a TemplateProcessing post-processor refers to."""
    if not processor:
        return
    for child in processor.get("processors", []):
        _remap_post_processor(child, moved)
    for entry in (processor.get("special_tokens") or {}).values():
        entry["ids"] = [moved.get(i, i) for i in entry["ids"]]


def write_xz(tokenizer: dict, path: Path) -> None:
    """Write compact JSON, xz-compressed at the strongest preset."""
    text = json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":"))
    path.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


def check(path: Path) -> None:
    """Load ``path`` with the tokenizers library and check that texts round-trip."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode("utf-8"))
    for text in CHECK_TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids)
        assert decoded == text, (path, text, decoded)
    print(f"{path}: {path.stat().st_size} bytes, {tok.get_vocab_size(True)} ids, round-trip ok")


def main(argv: list[str]) -> None:
    """Build both mini tokenizers from the shared folder and copy mini_llama3 into the package."""
    shared = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared" / "tokenizers"
    jobs = (("llama3", 8000, True, False), ("llama2", 4000, False, True))
    for name, keep, renumber, keep_chars in jobs:
        source = json.loads(lzma.decompress((shared / f"{name}.tokenizer.json.xz").read_bytes()))
        target = DATA / f"mini_{name}.tokenizer.json.xz"
        write_xz(truncate(source, keep, renumber, keep_chars), target)
        check(target)
    package_copy = ROOT / "exl2_enforcer" / "data" / "mini_llama3.tokenizer.json.xz"
    package_copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(DATA / "mini_llama3.tokenizer.json.xz", package_copy)
    print(f"copied to {package_copy}")


if __name__ == "__main__":
    main(sys.argv)
