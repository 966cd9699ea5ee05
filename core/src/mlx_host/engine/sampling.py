"""Per-request samplers and logits processors for the continuous batch."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_p, make_sampler

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


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


class Penalties:
    """OpenAI's ``logit_bias``, ``presence_penalty`` and ``frequency_penalty`` for one row: the
    bias is added to every step's logits; each token already in the answer (not the prompt) is
    lowered by the presence penalty once and by the frequency penalty per occurrence.

    mlx-lm calls it with the row's tokens so far; on its first call those end with the prompt,
    so what follows them is the answer."""

    def __init__(self, presence: float, frequency: float, bias: dict[int, float]) -> None:
        self._presence = presence
        self._frequency = frequency
        self._bias = bias
        self._bias_row: mx.array | None = None
        self._answer_start: int | None = None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """``logits`` biased and penalized."""
        if self._answer_start is None:
            self._answer_start = tokens.shape[0]
        width = logits.shape[-1]
        if self._bias:
            if self._bias_row is None:
                ids = mx.array(list(self._bias), dtype=mx.int32)
                row = mx.zeros((width,), logits.dtype)
                self._bias_row = row.at[ids].add(mx.array(list(self._bias.values()), logits.dtype))
            logits = logits + self._bias_row
        answer = tokens[self._answer_start :]
        if answer.size and (self._presence or self._frequency):
            counts = mx.zeros((width,), logits.dtype).at[answer].add(1)
            logits = logits - self._frequency * counts - self._presence * (counts > 0)
        return logits


def make_logits_processors(
    presence: float, frequency: float, bias: dict[int, float]
) -> list[LogitsProcessor]:
    """The processors a request's sampling needs (none when it asks for no bias or penalty)."""
    if not (presence or frequency or bias):
        return []
    return [Penalties(presence, frequency, bias)]
