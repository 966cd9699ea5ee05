"""What a request asks of a text generator and what it gets back.

These types are free of MLX, so routers, plugins and tests can use them without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seeds are accepted in OpenAI's range (a signed 64-bit integer) and used modulo 2**64,
#: the range MLX's random keys take.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the generator (already checked and capped by the API)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; the last one of a request has a ``finish_reason``."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
