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

logger = logging.getLogger(__name__)

#: JSON without optional whitespace: small models given the choice pad JSON with newlines and
#: spaces until max_tokens runs out.
_JSON_OPTIONS: Any = {"whitespace_flexible": False}


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

    @property
    def complete(self) -> bool:
        """Whether the text so far is a whole valid answer."""
        return self._matcher.is_accepting()

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """``logits`` with every token the grammar forbids next set to -inf."""
        try:
            if self._started:  # the last token is the one chosen at the previous step
                self._matcher.consume_token(cast(int, tokens[-1].item()))
            self._started = True
            if self._matcher.is_error():
                raise ValueError(self._matcher.get_error())
            allowed = self._allowed(logits.shape[-1])
        except Exception as exc:
            if self.error is None:
                logger.error("a constrained answer failed: %s", exc)
                self.error = "The answer could not be kept to its response_format"
            allowed = np.zeros(logits.shape[-1], bool)
            allowed[self._eos] = True
        return mx.where(mx.array(allowed), logits, -mx.inf)

    def _allowed(self, width: int) -> np.ndarray:
        bits = np.frombuffer(self._matcher.compute_bitmask(), np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: self._vocab].astype(bool)
        if len(allowed) < width:  # logits padded beyond the tokenizer's vocabulary
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

    def _ll_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._ll is None:
                eos = sorted(self._tokenizer.eos_token_ids)
                self._ll = llguidance.hf.from_tokenizer(self._tokenizer._tokenizer, eos_token=eos)
            return self._ll

    def constraint(self, fmt: OutputFormat) -> Constraint:
        """A constraint for ``fmt``; 400 naming what llguidance cannot enforce in the schema
        (never an unconstrained answer instead)."""
        ll = self._ll_tokenizer()
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                fmt.json_schema(), defaults=_JSON_OPTIONS
            )
        except ValueError as exc:
            raise _bad_schema(fmt, str(exc)) from exc
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll)
        if is_error:
            raise _bad_schema(fmt, messages[0])
        matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
        if matcher.is_error():
            raise _bad_schema(fmt, matcher.get_error())
        return Constraint(matcher, ll.vocab_size, ll.eos_token)


def _bad_schema(fmt: OutputFormat, why: str) -> InvalidRequestError:
    name = f" {fmt.name!r}" if fmt.name else ""
    return InvalidRequestError(
        f"response_format: the JSON schema{name} cannot be enforced: {why.strip()}",
        param="response_format",
        code="unsupported_schema",
    )
