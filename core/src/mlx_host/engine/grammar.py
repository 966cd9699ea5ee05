"""Structured output: an answer held to a JSON schema while it is decoded, with llguidance.

Each constrained request gets its own matcher, a logits processor in its row of the shared
batch: before each token it masks every token that would break the grammar, and it advances on
the token chosen. Rows without one are untouched, so constrained and free requests share a
batch. llguidance's MLX kernel needs Metal; the mask is applied here with ``mx.where`` on a
bit-unpacked mask, which works on every device (measured on the CPU backend: about 0.1 ms a
token, docs/engine.md).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np

from mlx_host.errors import InvalidRequestError
from mlx_host.generation import OutputFormat
from mlx_host.json_grammar import bad_schema, compile_format

logger = logging.getLogger(__name__)


class Constraint:
    """The logits processor of one constrained request (mlx-lm calls it with the row's tokens
    so far and its logits, before each token). It never raises inside the batch step: if the
    matcher fails, the row is steered to end-of-sequence and ``error`` says why."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos: int) -> None:
        self._matcher = matcher
        self._vocab = vocab_size
        self._eos = eos
        self._started = False
        self.error: str | None = None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """``logits`` with every token the grammar forbids next set to -inf."""
        width = logits.shape[-1]
        try:
            if self._started:  # the last token is the one chosen at the previous step
                self._matcher.consume_token(cast(int, tokens[-1].item()))
            self._started = True
            if self._matcher.is_error():
                raise ValueError(self._matcher.get_error())
            allowed = self._allowed(width)
        except Exception as exc:
            if self.error is None:
                logger.error("a constrained answer failed: %s", exc)
                self.error = "The answer could not be kept to its response_format"
            allowed = np.zeros(width, bool)
            allowed[min(self._eos, width - 1)] = True
        return mx.where(mx.array(allowed), logits, -mx.inf)

    def _allowed(self, width: int) -> np.ndarray:
        """The grammar's mask, cut or padded to the logits' width (a model's embedding may be
        padded past its tokenizer's vocabulary, or a tokenizer may list tokens past it)."""
        bits = np.frombuffer(self._matcher.compute_bitmask(), np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: min(self._vocab, width)].astype(bool)
        if len(allowed) < width:
            allowed = np.pad(allowed, (0, width - len(allowed)))
        return allowed


class GrammarCompiler:
    """Turns response formats into constraints for one model's tokenizer.

    Its llguidance tokenizer is built on first use (0.3 s for SmolLM2's 49k tokens), not at
    load, so models that never get a constrained request never pay for it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer  # mlx-lm's TokenizerWrapper
        self._lock = threading.Lock()
        self._ll: llguidance.LLTokenizer | None = None
        self._unusable: InvalidRequestError | None = None

    def _ll_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._ll is None and self._unusable is None:
                eos = sorted(self._tokenizer.eos_token_ids)
                try:
                    hf = self._tokenizer._tokenizer
                    self._ll = llguidance.hf.from_tokenizer(hf, eos_token=eos)
                except Exception as exc:  # e.g. a slow (Python) tokenizer
                    logger.error("no grammar tokenizer for this model: %s", exc)
                    self._unusable = InvalidRequestError(
                        "This model's tokenizer cannot hold answers to a response_format",
                        param="response_format",
                        code="unsupported_response_format",
                    )
            if self._unusable is not None:
                raise self._unusable
            assert self._ll is not None
            return self._ll

    def constraint(self, fmt: OutputFormat) -> Constraint:
        """A constraint for ``fmt``; 400 naming what cannot be enforced in the schema, or
        when this model's tokenizer cannot be used for grammars (never an unconstrained
        answer instead)."""
        ll = self._ll_tokenizer()
        grammar = compile_format(fmt, ll)
        matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
        if matcher.is_error():
            raise bad_schema(fmt, matcher.get_error())
        return Constraint(matcher, ll.vocab_size, ll.eos_token)
