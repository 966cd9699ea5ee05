"""Log probabilities in OpenAI's two shapes: chat's list of token objects, and legacy
completions' parallel lists with text offsets."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from mlx_host.generation import TokenLogprob

#: What OpenAI reports for a token the model could not choose (JSON has no -Infinity).
FLOOR = -9999.0


def _value(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else FLOOR


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": _value(logprob), "bytes": list(text.encode())}


def chat_logprobs(entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's ``logprobs``: ``content`` (one object per token) and ``refusal``."""
    content = [
        {**_token(e.token, e.logprob), "top_logprobs": [_token(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


class CompletionLogprobs:
    """A legacy completion's ``logprobs``, chunk after chunk: ``text_offset`` counts from the
    start of the completion, so one builder serves one answer."""

    def __init__(self) -> None:
        self._offset = 0

    def __call__(self, entries: Iterable[TokenLogprob]) -> dict[str, Any]:
        """``tokens``, ``token_logprobs``, ``top_logprobs`` and ``text_offset`` of ``entries``."""
        out: dict[str, list[Any]] = {
            "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": [],
        }  # fmt: skip
        for e in entries:
            out["tokens"].append(e.token)
            out["token_logprobs"].append(_value(e.logprob))
            out["top_logprobs"].append({t: _value(lp) for t, lp in e.top})
            out["text_offset"].append(self._offset)
            self._offset += len(e.token)
        return out
