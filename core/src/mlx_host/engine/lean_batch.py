"""A decoding step of mlx-lm's continuous batch without the work no row needs.

mlx-lm's ``GenerationBatch._step`` normalizes every row's logits into log-probabilities (a
log-sum-exp over the whole vocabulary) and slices them into one array per row, at every step,
for samplers and callers that read them. Greedy rows, and rows sampled by temperature alone,
choose the same tokens from the raw logits (the arg-max and the categorical distribution do not
change when a row is shifted by a constant). Only rows that report log-probabilities, or whose
top-p cut reads probabilities, need them; while none of the batch's rows does, the step skips
both (docs/engine.md has the figures).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch


class LeanGenerationBatch(GenerationBatch):
    """mlx-lm's generation batch, stepping without log-probabilities while no row in it is
    ``normalized`` (a predicate on uids, the scheduler's)."""

    normalized: Callable[[int], bool]

    def _step(self) -> tuple[list[int], list[Any]]:
        if any(self.normalized(uid) for uid in self.uids):
            return super()._step()
        # mlx-lm's attributes are typed by their first values (None), not by what they hold.
        b: Any = self
        b._current_tokens = b._next_tokens
        b._current_logprobs = b._next_logprobs
        inputs = b._current_tokens
        logits = b.model(inputs[:, None], cache=b.prompt_cache)[:, -1, :]
        # Logits processors (penalties, grammars) as mlx-lm applies them.
        token_context = []
        if any(b.logits_processors):
            rows = []
            for e in range(len(b.uids)):
                row = logits[e : e + 1]
                if processors := b.logits_processors[e] or ():
                    context = b._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in processors:
                        row = processor(context, row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)
        samplers = b.samplers or [None] * len(b.uids)
        if all(s is None for s in samplers):
            sampled = mx.argmax(logits, axis=-1)
        else:
            sampled = mx.concatenate(
                [(s or b.fallback_sampler)(logits[e : e + 1]) for e, s in enumerate(samplers)]
            )
        b._next_tokens = sampled
        b._next_logprobs = [None] * len(b.uids)
        mx.async_eval(sampled, token_context)
        mx.eval(inputs, b._current_logprobs)  # a normalized step's, where there was one
        tokens: list[int] = inputs.tolist()
        for row_tokens, token in zip(b.tokens, tokens, strict=True):
            row_tokens.append(token)
        return tokens, b._current_logprobs


def needs_logprobs(temperature: float, top_p: float, logprobs: int | None) -> bool:
    """Whether a row must be stepped with normalized log-probabilities."""
    return logprobs is not None or (temperature > 0 and 0 < top_p < 1)


def lean_batch_generator(normalized: Callable[[int], bool], **options: Any) -> BatchGenerator:
    """mlx-lm's ``BatchGenerator`` (``options`` as it takes them) whose decoding steps skip
    log-probabilities while no row of the batch is ``normalized``. (Newly prefilled rows join
    it after their first token, which mlx-lm's own step chooses.)"""
    generator = BatchGenerator(**options)
    lean = LeanGenerationBatch.empty(generator.model, generator.sampler)
    lean.normalized = normalized
    generator._generation_batch = lean  # every decoding step runs on it (extend merges in)
    return generator
