"""What an embeddings request asks of an engine of ``embedding`` models, and what it gets back.

Free of MLX (like ``generation``), so routers, plugins and tests can use them without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

#: One input: text, or token ids of the model's own vocabulary.
EmbeddingInput = str | list[int]


@dataclass(frozen=True)
class Embeddings:
    """One vector per input, in order (float32, ``(inputs, dimensions)``, unit length when
    the model normalizes), and the tokens embedded (after truncation to the model's window)."""

    vectors: npt.NDArray[np.float32]
    tokens: int


@runtime_checkable
class Embedder(Protocol):
    """What engines of ``embedding`` models offer the API (and plugin routes)."""

    #: Length of the vectors.
    dimensions: int
    #: Most tokens of one input the model reads; longer inputs are truncated to it.
    max_input_tokens: int
    #: Size of the model's vocabulary (token-id inputs must be below it).
    vocab_size: int
    #: Whether a vector's first ``n`` values are themselves an embedding (Matryoshka
    #: training): only then may a request ask for fewer ``dimensions``.
    truncatable: bool

    async def embed(
        self, inputs: list[EmbeddingInput], service: str, truncate: bool = True
    ) -> Embeddings:
        """Embed ``inputs``, batched with other requests' inputs to the same model. An input
        longer than ``max_input_tokens`` is cut to it, or with ``truncate`` false refused
        (``InvalidRequestError`` naming it); so is a token id outside the vocabulary."""
        ...
