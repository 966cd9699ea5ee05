"""Convert a CTranslate2 Whisper model (``model.bin`` + ``config.json``) into an MLX Whisper
directory (``config.json`` + ``weights.safetensors``) that the speech-to-text engine loads.

``model.bin`` is little-endian: u32 version; strings are a u16 length (NUL included) and the
bytes; the spec name (``WhisperSpec``), u32 revision, u32 variable count; then per variable its
name, u8 rank, rank u32 dims, u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 byte
count and the row-major data; then u32 alias count and (alias, target) pairs. int8 weights come
with ``<x>/weight_scale``, one per output row (w = q / scale). docs/engine.md has the mapping
to mlx-whisper's names; a converted tiny.en decodes token-identically to CTranslate2.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_host.errors import ModelLoadError

SPEC = "WhisperSpec"
_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5
_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)")
_FUSED_QKV_SPLIT = 3  # self_attention/linear_0 holds query, key and value rows
_FUSED_KV_SPLIT = 2  # cross attention linear_1 holds key and value rows


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0]

    def string(self) -> str:
        size = self.unpack("H")
        text = self.data[self.pos : self.pos + size - 1].decode()
        self.pos += size
        return text


def spec_name(model_bin: Path) -> str | None:
    """The spec a ``model.bin`` holds (``WhisperSpec``...), read from its header only."""
    try:
        with model_bin.open("rb") as f:
            reader = _Reader(f.read(4 + 2 + 256))
        reader.unpack("I")
        return reader.string()
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def is_ct2_whisper(path: Path) -> bool:
    """Whether ``path`` is a CTranslate2 Whisper model directory."""
    return path.is_dir() and spec_name(path / "model.bin") == SPEC


def read_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (aliases resolved), as float32 where it
    is a float, and int8 weights already scaled back."""
    reader = _Reader(model_bin.read_bytes())
    reader.unpack("I")  # format version
    if (name := reader.string()) != SPEC:
        raise ModelLoadError(f"{model_bin.name} holds a {name}, not a Whisper model")
    reader.unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        dims = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype, size = reader.unpack("B"), reader.unpack("I")
        raw = reader.data[reader.pos : reader.pos + size]
        reader.pos += size
        if dtype == _BF16:
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[dtype])
        else:
            raise ModelLoadError(f"{model_bin.name}: unknown data type {dtype} for {name}")
        variables[name] = array.reshape(dims)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        weight = name.removesuffix("_scale")
        scale = variables.pop(name).astype(np.float32)
        variables[weight] = variables[weight].astype(np.float32) / scale.reshape(-1, 1)
    return {n: v.astype(np.float32) if v.dtype.kind == "f" else v for n, v in variables.items()}


def _attention(prefix: str, rest: str, array: np.ndarray, cross: bool) -> dict[str, np.ndarray]:
    """mlx-whisper names for one attention linear of CTranslate2's fused layout."""
    part, _, kind = rest.partition("/")
    if part == "layer_norm":
        ln = f"{prefix}.{'cross_attn_ln' if cross else 'attn_ln'}"
        return {f"{ln}.{'weight' if kind == 'gamma' else 'bias'}": array}
    attn = f"{prefix}.{'cross_attn' if cross else 'attn'}"
    projections = (
        {"linear_0": ["query"], "linear_1": ["key", "value"], "linear_2": ["out"]}
        if cross
        else {"linear_0": ["query", "key", "value"], "linear_1": ["out"]}
    )[part]
    pieces = np.split(array, len(projections), axis=0)
    return {
        f"{attn}.{proj}.{kind}": piece
        for proj, piece in zip(projections, pieces, strict=True)
        if not (proj == "key" and kind == "bias")  # Whisper's key projection has no bias
    }


def mlx_weights(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 variable names to mlx-whisper's, with conv weights in MLX's layout."""
    out: dict[str, np.ndarray] = {}
    norms = {"gamma": "weight", "beta": "bias"}
    for name, array in variables.items():
        if array.ndim == 0 or (
            name.endswith("position_encodings/encodings")
            and (
                name.startswith("encoder")  # recomputed by mlx-whisper
            )
        ):
            continue
        if match := _LAYER.fullmatch(name):
            side, index, rest = match.groups()
            prefix = f"{side}.blocks.{index}"
            if rest.startswith("self_attention/"):
                out |= _attention(prefix, rest.removeprefix("self_attention/"), array, False)
            elif rest.startswith("attention/"):
                out |= _attention(prefix, rest.removeprefix("attention/"), array, True)
            elif rest.startswith("ffn/layer_norm/"):
                out[f"{prefix}.mlp_ln.{norms[rest.rsplit('/', 1)[1]]}"] = array
            elif rest.startswith("ffn/linear_"):
                layer = {"linear_0": "mlp1", "linear_1": "mlp2"}[rest.split("/")[1]]
                out[f"{prefix}.{layer}.{rest.rsplit('/', 1)[1]}"] = array
            continue
        if name.startswith("encoder/conv"):
            conv, kind = name.removeprefix("encoder/").split("/")
            # CTranslate2 stores (out, in, width); MLX convolutions take (out, width, in).
            out[f"encoder.{conv}.{kind}"] = array.transpose(0, 2, 1) if kind == "weight" else array
        elif name in ("encoder/layer_norm/gamma", "encoder/layer_norm/beta"):
            out[f"encoder.ln_post.{norms[name.rsplit('/', 1)[1]]}"] = array
        elif name in ("decoder/layer_norm/gamma", "decoder/layer_norm/beta"):
            out[f"decoder.ln.{norms[name.rsplit('/', 1)[1]]}"] = array
        elif name == "decoder/embeddings/weight":
            out["decoder.token_embedding.weight"] = array
        elif name == "decoder/position_encodings/encodings":
            out["decoder.positional_embedding"] = array
    return out


def dimensions(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """mlx-whisper's ``ModelDimensions`` of the model, read off its variables."""

    def layers(side: str) -> int:
        return 1 + max(
            int(m.group(2)) for n in variables if (m := _LAYER.fullmatch(n)) and m.group(1) == side
        )

    conv1 = variables["encoder/conv1/weight"]
    embeddings = variables["decoder/embeddings/weight"]
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": layers("encoder"),
        "n_vocab": int(embeddings.shape[0]),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(embeddings.shape[1]),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": layers("decoder"),
    }


def convert_ct2_whisper(src: Path, dst: Path, weight_format: str) -> None:
    """Write an MLX Whisper directory for the CTranslate2 model in ``src`` into ``dst`` (which
    must not exist yet): float32 (the fast path on the CPU backend), float16, or quantized
    (4-bit linears and embeddings, for Metal)."""
    variables = read_variables(src / "model.bin")
    try:
        ct2_config = json.loads((src / "config.json").read_text())
    except (OSError, ValueError):
        ct2_config = {}
    config: dict[str, Any] = {"model_type": "whisper", **dimensions(variables)}
    if heads := ct2_config.get("alignment_heads"):
        config["alignment_heads"] = heads  # which cross-attention heads time words
    dtype = mx.float16 if weight_format == "float16" else mx.float32
    weights = {n: mx.array(a).astype(dtype) for n, a in mlx_weights(variables).items()}
    if weight_format == "quantized":
        weights, config["quantization"] = _quantize(weights)
    dst.mkdir(parents=True)
    mx.save_safetensors(str(dst / "weights.safetensors"), weights, metadata={"format": "mlx"})
    (dst / "config.json").write_text(json.dumps(config, indent=2))


def _quantize(weights: dict[str, mx.array]) -> tuple[dict[str, mx.array], dict[str, int]]:
    """4-bit linears and token embedding (what mlx-whisper's loader quantizes back), the rest
    in float16."""
    group, bits = 64, 4
    out: dict[str, mx.array] = {}
    for name, w in weights.items():
        quantizable = name.endswith(".weight") and w.ndim == 2 and w.shape[-1] % group == 0
        if quantizable and "conv" not in name:
            stem = name.removesuffix(".weight")
            q, scales, biases = mx.quantize(w.astype(mx.float16), group_size=group, bits=bits)
            out[name], out[f"{stem}.scales"], out[f"{stem}.biases"] = q, scales, biases
        else:
            out[name] = w.astype(mx.float16)
    return out, {"group_size": group, "bits": bits}
