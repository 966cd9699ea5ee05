"""A BERT encoder on MLX for sentence embeddings, reading Hugging Face BERT weights as they are
(sentence-transformers directories: all-MiniLM-L6-v2 and its kin).

Post-norm BERT: token, position and segment embeddings with a layer norm, then per layer
self-attention and a GELU feed-forward, each added back and layer-normed. Pooling and
normalization follow the directory's sentence-transformers configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        """From a model directory's ``config.json``; ``ValueError`` for a BERT variant this
        encoder does not compute (it would give wrong vectors, not an error)."""
        config = json.loads((path / "config.json").read_text())
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (gelu)")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})


# Abramowitz and Stegun 7.1.26: erf to within 1.5e-7 from one exponential. MLX's own erf is
# evaluated element by element on the CPU: the feed-forward's GELU took two thirds of a layer
# (17 of 25 ms for 512 tokens of MiniLM); compiled, this takes 11.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@mx.compile
def _gelu(x: mx.array) -> mx.array:
    """Exact GELU (x times the normal CDF), as BERT uses it."""
    z = mx.abs(x) * (1 / math.sqrt(2))
    t = 1.0 / (1.0 + _ERF_P * z)
    poly = mx.array(_ERF_A[4], x.dtype)
    for a in reversed(_ERF_A[:4]):
        poly = poly * t + a
    tail = poly * t * mx.exp(-z * z)  # 1 - erf(|x| / sqrt 2)
    return 0.5 * x * mx.where(x >= 0, 2.0 - tail, tail)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        batch, length, width = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scale = 1 / math.sqrt(width // self.heads)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(batch, length, width)
        return cast(mx.array, self.norm(self.dense(out) + x))


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention(x, mask)
        return cast(mx.array, self.norm(self.output(_gelu(self.intermediate(x))) + x))


class BertEncoder(nn.Module):
    """Token ids to contextual vectors."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.embeddings_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = [_Layer(c) for _ in range(c.num_hidden_layers)]

    def __call__(self, ids: mx.array, attention_mask: mx.array) -> mx.array:
        """``(batch, length)`` ids and 0/1 mask to ``(batch, length, hidden)`` vectors."""
        positions = mx.arange(ids.shape[1])[None, :]
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(mx.zeros_like(ids))
        )
        x = self.embeddings_norm(x)
        # Padding is masked out of every query's attention (an additive -inf-like bias).
        bias = ((1 - attention_mask) * -1e9).astype(x.dtype)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x


#: Hugging Face BERT weight names to this encoder's: leading prefixes, then inner parts.
_PREFIXES = (("embeddings.LayerNorm.", "embeddings_norm."), ("embeddings.", ""))
_INNER = (
    ("encoder.layer.", "layers."),
    ("attention.self.", "attention."),
    ("attention.output.dense.", "attention.dense."),
    ("attention.output.LayerNorm.", "attention.norm."),
    ("intermediate.dense.", "intermediate."),
    ("output.dense.", "output."),
    ("output.LayerNorm.", "norm."),
)


def _rename(name: str) -> str:
    name = name.removeprefix("bert.")
    for old, new in _PREFIXES:
        if name.startswith(old):
            return new + name.removeprefix(old)
    for old, new in _INNER:
        name = name.replace(old, new)
    return name


def load_bert(path: Path) -> BertEncoder:
    """The encoder of a BERT directory (``config.json`` and ``model.safetensors``)."""
    config = BertConfig.read(path)
    weights = cast(dict[str, mx.array], mx.load(str(path / "model.safetensors")))
    model = BertEncoder(config)
    own = {_rename(k): v.astype(mx.float32) for k, v in weights.items()}
    # position_ids is a buffer of 0..n-1; the pooler serves BERT's pretraining only.
    own = {k: v for k, v in own.items() if k != "position_ids" and not k.startswith("pooler.")}
    model.load_weights(list(own.items()))  # strict: a missing or stray weight is an error
    mx.eval(model.parameters())
    return model


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one sentence vector (sentence-transformers' ``1_Pooling``
    and ``Normalize`` modules)."""

    mode: str = "mean"  # mean, cls or max
    normalize: bool = True

    @classmethod
    def read(cls, path: Path) -> Pooling:
        """From a sentence-transformers directory (plain mean pooling, normalized, without);
        ``ValueError`` for modules or pooling modes not computed here (a ``Dense`` layer,
        weighted-mean pooling, ...), which would give wrong vectors, not an error."""
        mode = "mean"
        pooling = path / "1_Pooling" / "config.json"
        if pooling.exists():
            config: dict[str, Any] = json.loads(pooling.read_text())
            modes = {k.removeprefix("pooling_mode_") for k, v in config.items()
                     if k.startswith("pooling_mode_") and v is True}  # fmt: skip
            known = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}
            if len(modes) != 1 or not modes <= set(known):
                raise ValueError(f"pooling {sorted(modes)} is not supported (one of {known})")
            mode = known[modes.pop()]
        normalize = True
        modules = path / "modules.json"
        if modules.exists():
            types = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(modules.read_text())]
            if unknown := set(types) - {"Transformer", "Pooling", "Normalize"}:
                raise ValueError(
                    f"sentence-transformers modules {sorted(unknown)} are not supported"
                )
            normalize = "Normalize" in types
        return cls(mode, normalize)

    def __call__(self, vectors: mx.array, attention_mask: mx.array) -> mx.array:
        """``(batch, length, hidden)`` to ``(batch, hidden)``."""
        mask = attention_mask[:, :, None].astype(vectors.dtype)
        if self.mode == "cls":
            pooled = vectors[:, 0, :]
        elif self.mode == "max":
            pooled = mx.max(vectors + (mask - 1) * 1e9, axis=1)
        else:
            pooled = (vectors * mask).sum(axis=1) / mx.maximum(mask.sum(axis=1), 1e-9)
        if self.normalize:
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled
