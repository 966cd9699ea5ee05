"""``POST /embeddings``: vectors for texts or token arrays, OpenAI-compatible.

Every input of every concurrent request to a model shares its engine's batched passes; the
vectors come back in input order, as floats or as base64 of little-endian float32 (what
OpenAI's SDKs ask for by default, and decode themselves).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from mlx_host.api.access import record_of
from mlx_host.api.answers import until_done
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.embeddings import Embedder, EmbeddingInput
from mlx_host.errors import InvalidRequestError

router = APIRouter(tags=["embeddings"], responses=error_responses(400, 401, 403, 404, 429, 503))

#: The most inputs one request may carry, as OpenAI allows.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    """Body of ``POST /embeddings``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description='An embedding model, or "default".')
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a token array, or a list of token arrays "
        f"(at most {MAX_INPUTS} inputs; none empty)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None,
        gt=0,
        description="The vectors' length: the model's own, or fewer where the model was "
        "trained for shorter vectors (the rest are cut and the vector renormalized).",
    )
    truncate: bool = Field(
        True,
        description="Not OpenAI's: an input longer than the model's window is cut to it (as "
        "sentence-transformers does); false: it is refused with a 400 naming it.",
    )
    user: str | None = Field(
        None, max_length=256, description="An end-user id; accepted for compatibility."
    )

    def inputs(self) -> list[EmbeddingInput]:
        """The inputs as a list; 400 naming the first empty one, or too many."""
        raw = self.input
        items: list[EmbeddingInput]
        if isinstance(raw, str):
            items = [raw]
        elif raw and all(isinstance(x, int) for x in raw):
            items = [raw]  # type: ignore[list-item]  # one token array
        else:
            items = list(raw)  # type: ignore[arg-type]
        if not items:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(items) > MAX_INPUTS:
            raise InvalidRequestError(
                f"input has {len(items)} items; at most {MAX_INPUTS} are allowed", param="input"
            )
        for i, item in enumerate(items):
            if not item:
                raise InvalidRequestError(f"input[{i}] is empty", param="input")
        return items


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, caller: Caller, host: HostDep, request: Request
) -> dict[str, Any]:
    """Embed ``input`` (OpenAI-compatible) with the service's embedding model.

    ``usage.prompt_tokens`` counts the tokens embedded, the model's special tokens included
    and anything past its window (``max_input_tokens``) not.
    """
    inputs = body.inputs()
    name, _, engine = await host.engine_for(caller.spec, "embedding", Embedder, body.model)
    dimensions = _dimensions(body.dimensions, engine, name)
    # A client that leaves takes its inputs out of the engine's queue.
    result = await until_done(engine.embed(inputs, caller.spec.name, body.truncate), request)
    record = record_of(request)
    record.model = name
    record.usage(result.tokens)
    vectors = result.vectors
    if dimensions < engine.dimensions:
        vectors = vectors[:, :dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


def _dimensions(asked: int | None, engine: Embedder, model: str) -> int:
    if asked is None or asked == engine.dimensions:
        return engine.dimensions
    if not engine.truncatable:
        raise InvalidRequestError(
            f"The model {model!r} makes vectors of {engine.dimensions} dimensions only",
            param="dimensions",
        )
    if asked > engine.dimensions:
        raise InvalidRequestError(
            f"dimensions is at most {engine.dimensions} for the model {model!r}",
            param="dimensions",
        )
    return asked


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    vector = vector.astype("<f4")
    if encoding == "base64":
        return base64.b64encode(vector.tobytes()).decode()
    return [float(x) for x in vector]
