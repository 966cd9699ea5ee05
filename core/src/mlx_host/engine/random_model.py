"""Small randomly initialised llama models, written with real MLX code (for tests and demos).

They load and generate through the same path as any model; their text is noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import llama


def _config(hidden_size: int, layers: int, vocab_size: int, tied: bool) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "max_position_embeddings": 2048,
    }


def random_llama(
    seed: int = 0,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 300,
    tied: bool = True,
) -> llama.Model:
    """A llama in memory, the same for the same arguments, ready to run as a loaded one is
    (evaluated, in eval mode)."""
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(_config(hidden_size, layers, vocab_size, tied)))
    mx.eval(model.parameters())
    model.eval()
    return model


def write_random_llama(
    dst: Path,
    tokenizer_dir: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    file_format: str = "mlx",
) -> Path:
    """Write a llama model directory into ``dst`` using ``tokenizer_dir``'s tokenizer.

    ``file_format="pt"`` marks the weights as a Hugging Face (PyTorch-exported) checkpoint, so
    that mlx-host converts it like one.
    """
    tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = len(tokenizer["model"]["vocab"])
    config = _config(hidden_size, layers, vocab, tied=True)
    model = random_llama(seed, hidden_size=hidden_size, layers=layers, vocab_size=vocab)
    weights = dict(tree_flatten(model.parameters()))
    dst.mkdir(parents=True)
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": file_format})
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, dst / name)
    return dst
