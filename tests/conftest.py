"""Shared pytest fixtures.

ExLlamaV2 fixtures (used by ``test_exllamav2_filter.py`` and ``gpu/``):

* ``exl2`` -- the real ``exllamav2`` package imported on top of the CPU stand-in for its CUDA
  extension (``exl2_cpu_stub.py``); skips when exllamav2 is not installed.
* ``exl2_model_dir`` -- a factory that writes real, tiny, random-weight Llama model folders
  (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that
  ``ExLlamaV2Config`` and ``ExLlamaV2Tokenizer`` load unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import lzma
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from data_sets import require_file

TESTS = Path(__file__).resolve().parent
SHARED_TOKENIZERS = TESTS.parent.parent / "shared" / "tokenizers"
MINI_LLAMA3 = TESTS / "data" / "mini_llama3.tokenizer.json.xz"

#: tokenizer name -> (bos id, eos ids as an instruct model's config.json lists them, logits width)
EXL2_TOKENIZERS: dict[str, tuple[int, list[int], int]] = {
    "mini": (8000, [8001, 8008, 8009], 8256),
    "llama3": (128000, [128001, 128008, 128009], 128256),
    "qwen3": (151643, [151645, 151643], 151936),
    "llama2": (1, [2], 32000),
}


@pytest.fixture(scope="session")
def exl2():
    """The ``exllamav2`` module, importable on CPU thanks to the extension stand-in (or skip)."""
    if importlib.util.find_spec("exllamav2") is None:
        pytest.skip("exllamav2 is not installed (pip install -e '.[test]', or: "
                    "pip install --no-deps exllamav2==0.3.2 && pip install safetensors pillow rich)")
    if "exllamav2" not in sys.modules:
        sys.path.insert(0, str(TESTS))
        import exl2_cpu_stub

        exl2_cpu_stub.install()
    try:
        module = importlib.import_module("exllamav2")
        importlib.import_module("exllamav2.generator")
        importlib.import_module("exllamav2.generator.filters")
    except ImportError as exc:
        pytest.skip(f"exllamav2 is installed but does not import: {exc}")
    return module


def _tokenizer_files(name: str) -> tuple[str, dict]:
    """``tokenizer.json`` text and ``tokenizer_config.json`` dict for ``name`` (or skip)."""
    if name == "mini":
        # the mini vocabulary has no tokenizer_config.json of its own: name its bos/eos like Llama 3
        text = lzma.decompress(MINI_LLAMA3.read_bytes()).decode("utf-8")
        return text, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    file = SHARED_TOKENIZERS / f"{name}.tokenizer.json.xz"
    require_file(file, "real tokenizer (../shared/tokenizers)")
    config = json.loads((SHARED_TOKENIZERS / f"{name}.tokenizer_config.json").read_text(encoding="utf-8"))
    return lzma.decompress(file.read_bytes()).decode("utf-8"), config


def _llama_config(bos: int, eos: list[int], vocab_size: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
        "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "vocab_size": vocab_size,
        "bos_token_id": bos, "eos_token_id": eos,
    }


def _write_weights(path: Path, config: dict, seed: int = 0) -> None:
    """Random FP16 weights with the usual Llama tensor names and shapes (embeddings tied to the head)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    hidden, inter = config["hidden_size"], config["intermediate_size"]

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.float16)

    tensors = {"model.embed_tokens.weight": rand(config["vocab_size"], hidden),
               "model.norm.weight": torch.ones(hidden, dtype=torch.float16)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{proj}.weight"] = rand(hidden, hidden)
        tensors[p + "mlp.gate_proj.weight"] = rand(inter, hidden)
        tensors[p + "mlp.up_proj.weight"] = rand(inter, hidden)
        tensors[p + "mlp.down_proj.weight"] = rand(hidden, inter)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="session")
def exl2_model_dir(tmp_path_factory) -> Callable[..., Path]:
    """Factory ``make(tokenizer, *, vocab_size=None, eos_token_id=None) -> Path`` of a model folder.

    ``tokenizer`` is ``"mini"`` (always available) or a name in ``../shared/tokenizers``
    (skips when absent).  ``vocab_size`` is config.json's value, i.e. the logits width
    (default: the real model's).  Folders are built once per argument set and session.
    """
    built: dict[tuple, Path] = {}

    def make(tokenizer: str, *, vocab_size: int | None = None, eos_token_id: list[int] | None = None) -> Path:
        bos, eos, width = EXL2_TOKENIZERS[tokenizer]
        key = (tokenizer, vocab_size or width, tuple(eos_token_id or eos))
        if key in built:
            return built[key]
        text, tok_config = _tokenizer_files(tokenizer)
        folder = tmp_path_factory.mktemp(f"exl2_{tokenizer}_{key[1]}")
        config = _llama_config(bos, list(key[2]), key[1])
        (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        (folder / "tokenizer.json").write_text(text, encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")
        _write_weights(folder / "model.safetensors", config)
        built[key] = folder
        return folder

    return make
