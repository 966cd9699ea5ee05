"""Per-request samplers for the continuous batch."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_p, make_sampler

Sampler = Callable[[mx.array], mx.array]


def make_request_sampler(temperature: float, top_p: float, seed: int | None) -> Sampler | None:
    """A sampler for one request, or None for greedy decoding (batched with all greedy rows).

    With a seed, the request draws from its own PRNG key chain, so its output does not depend on
    what else shares the batch; mlx-lm's samplers use the global random state instead.
    """
    if temperature <= 0:
        return None
    if seed is None:
        return make_sampler(temp=temperature, top_p=top_p if top_p < 1 else 0.0)
    key = mx.random.key(seed % 2**64)  # MLX keys take 0..2**64-1; the API allows negatives

    def sampler(logprobs: mx.array) -> mx.array:
        nonlocal key
        if 0 < top_p < 1:
            logprobs = apply_top_p(logprobs, top_p)
        key, step_key = mx.random.split(key)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=step_key)

    return sampler
