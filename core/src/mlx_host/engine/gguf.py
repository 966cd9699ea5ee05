"""Convert a llama-architecture GGUF file into an MLX model directory that mlx-lm loads.

MLX reads GGUF natively: Q4_0/Q4_1/Q8_0 tensors come back already in MLX's quantized layout
(``weight``/``scales``/``biases``, group size 32). What is left is renaming tensors, writing the
llama config from the ``llama.*`` metadata and rebuilding the tokenizer from the vocabulary and
merges stored in the file (transformers' own GGUF reader needs torch, which we do not install).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import mlx.core as mx

from mlx_host.errors import ModelLoadError

WeightFormat = Literal["float32", "float16", "quantized"]

GGUF_GROUP_SIZE = 32
_TOP_LEVEL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_SPECIAL_TOKEN_TYPE = 3


def mlx_tensor_name(gguf_name: str) -> str:
    """Map a GGUF tensor name (``blk.3.attn_q.weight``) to its mlx-lm llama name."""
    parts = gguf_name.split(".")
    suffix = parts[-1]
    if parts[0] == "blk":
        layer, base = parts[1], parts[2]
        if base not in _BLOCK:
            raise ModelLoadError(f"GGUF tensor {gguf_name!r} has no llama equivalent")
        return f"model.layers.{layer}.{_BLOCK[base]}.{suffix}"
    base = ".".join(parts[:-1])
    if base not in _TOP_LEVEL:
        raise ModelLoadError(f"GGUF tensor {gguf_name!r} has no llama equivalent")
    return f"{_TOP_LEVEL[base]}.{suffix}"


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, mx.array) else value


def llama_config(meta: dict[str, Any], has_lm_head: bool) -> dict[str, Any]:
    """Build an mlx-lm llama ``config.json`` from GGUF ``llama.*`` metadata."""
    arch = _scalar(meta.get("general.architecture"))
    if arch != "llama":
        raise ModelLoadError(f"only llama-architecture GGUF files are supported, not {arch!r}")

    def get(key: str, default: Any = None) -> Any:
        return _scalar(meta.get(f"llama.{key}", default))

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": int(get("vocab_size", len(meta["tokenizer.ggml.tokens"]))),
        "tie_word_embeddings": not has_lm_head,
        # llama.cpp stores Q and K rows in the interleaved rotary layout.
        "rope_traditional": True,
    }


def _write_tokenizer(meta: dict[str, Any], dst: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if _scalar(meta.get("tokenizer.ggml.model")) != "gpt2":
        raise ModelLoadError("only byte-level BPE (gpt2-style) GGUF tokenizers are supported")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    types = meta["tokenizer.ggml.token_type"].tolist()
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, types, strict=True) if kind == _SPECIAL_TOKEN_TYPE]
    tokenizer.add_special_tokens(special)
    tokenizer.save(str(dst / "tokenizer.json"))

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if idx is None else tokens[int(_scalar(idx))]

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(_scalar(meta.get("tokenizer.ggml.add_bos_token", False))),
        "chat_template": _scalar(meta.get("tokenizer.chat_template")),
        "model_max_length": int(_scalar(meta.get("llama.context_length", 2048))),
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def convert_gguf(
    src: Path,
    dst: Path,
    weight_format: WeightFormat,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write an MLX model directory for ``src`` into ``dst`` (which must not exist yet).

    ``weight_format`` picks how quantized tensors are stored: ``quantized`` keeps them as they
    are (fast on Metal), ``float32``/``float16`` dequantize them (float32 is the fast path on the
    CPU backend with an optimized BLAS). ``progress(done, total)`` is called per tensor.
    """
    try:
        loaded = mx.load(str(src), return_metadata=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read GGUF file {src}: {exc}") from exc
    weights, meta = cast(tuple[dict[str, mx.array], dict[str, Any]], loaded)
    dtype = mx.float16 if weight_format == "float16" else mx.float32
    out: dict[str, mx.array] = {}
    quantization: dict[str, Any] = {}
    names = [n for n in weights if not n.endswith((".scales", ".biases"))]
    for done, name in enumerate(names, start=1):
        target = mlx_tensor_name(name)
        tensor = weights[name]
        stem = name.removesuffix(".weight")
        scales, biases = weights.get(f"{stem}.scales"), weights.get(f"{stem}.biases")
        if scales is None or biases is None:
            out[target] = tensor.astype(dtype) if weight_format != "quantized" else tensor
        else:
            bits = 32 * tensor.shape[-1] // (scales.shape[-1] * GGUF_GROUP_SIZE)
            if weight_format == "quantized":
                module = target.removesuffix(".weight")
                out[target], out[f"{module}.scales"], out[f"{module}.biases"] = (
                    tensor,
                    scales,
                    biases,
                )
                quantization[module] = {"group_size": GGUF_GROUP_SIZE, "bits": bits}
            else:
                out[target] = mx.dequantize(
                    tensor, scales, biases, group_size=GGUF_GROUP_SIZE, bits=bits
                ).astype(dtype)
        if progress:
            progress(done, len(names))

    config = llama_config(meta, has_lm_head="lm_head.weight" in out)
    if quantization:
        # mlx-lm reads per-module entries; the top-level pair is what most tooling expects.
        common = max(quantization.values(), key=list(quantization.values()).count)
        config["quantization"] = {**common, **quantization}
    dst.mkdir(parents=True)
    mx.save_safetensors(str(dst / "model.safetensors"), out, metadata={"format": "mlx"})
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(meta, dst)
