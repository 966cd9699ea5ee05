"""``POST /completions``: legacy text completions (no chat template) on the same engines."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request

from mlx_host.api.answers import JSON_OR_EVENTS
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.logprobs import CompletionLogprobs
from mlx_host.api.prompt import check_fits
from mlx_host.api.schemas import CompletionRequest
from mlx_host.api.textgen import TextCall, response_head
from mlx_host.errors import InvalidRequestError
from mlx_host.generation import Delta

router = APIRouter(
    tags=["completions"], responses=error_responses(400, 401, 403, 404, 413, 429, 503)
)


class _Choices:
    """The choices of one answer's chunks, or of the whole answer (its logprobs' text
    offsets run on from chunk to chunk)."""

    def __init__(self, logprobs: bool) -> None:
        self._logprobs = CompletionLogprobs() if logprobs else None

    def chunk(self, piece: Delta, finish_reason: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "text": piece.text,
            "logprobs": self._logprobs(piece.logprobs) if self._logprobs else None,
            "finish_reason": finish_reason,
        }

    def whole(self, text: str, last: Delta) -> dict[str, Any]:
        return self.chunk(dataclasses.replace(last, text=text), last.finish_reason)


async def _nothing(_: str) -> dict[str, Any]:
    return {}


@router.post("/completions", responses=JSON_OR_EVENTS)
async def create_completion(
    body: CompletionRequest, caller: Caller, host: HostDep, request: Request
) -> Any:
    """Continue ``prompt`` as plain text (OpenAI-compatible); ``stream: true`` for SSE. With
    ``suffix``, write what goes between ``prompt`` and ``suffix`` (fill in the middle), for
    models whose tokenizer has FIM tokens.

    The service's defaults and caps apply; its system prompt does not (there is no chat).
    """
    call = TextCall.plan(host, caller.spec, "completion", body)
    text = body.prompt_text()
    model, engine = await call.load()
    if body.suffix:
        fim = engine.fill_in_middle(text, body.suffix)
        if fim is None:
            raise InvalidRequestError(
                f"suffix is not supported by {model.name!r}: its tokenizer has no "
                "fill-in-the-middle tokens",
                param="suffix",
                code="unsupported_parameter",
            )
        prompt = fim
    else:
        prompt = engine.encode(text)
    check_fits(prompt, engine.context_length, "prompt")
    choices = _Choices(logprobs=call.params.logprobs is not None)
    return await call.answer(
        call.generate(engine, prompt), response_head("cmpl", model), body, request,
        objects=("text_completion", "text_completion"),
        chunk=choices.chunk, whole=choices.whole, on_finish=_nothing,
    )  # fmt: skip
