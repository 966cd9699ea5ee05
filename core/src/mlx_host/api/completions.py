"""``POST /completions``: legacy text completions (no chat template) on the same engine."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request

from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.policy import choose_model, sampling_params
from mlx_host.api.prompt import check_fits
from mlx_host.api.responses import collect, stream_response, usage
from mlx_host.api.schemas import CompletionRequest

router = APIRouter(
    tags=["completions"], responses=error_responses(400, 401, 403, 404, 413, 429, 503)
)


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


async def _nothing(_: str) -> dict[str, Any]:
    return {}


@router.post("/completions")
async def create_completion(
    body: CompletionRequest, caller: Caller, host: HostDep, request: Request
):
    """Continue ``prompt`` as plain text (OpenAI-compatible); ``stream: true`` for SSE.

    The service's defaults and caps apply; its system prompt does not (there is no chat).
    """
    service = caller.spec
    name = choose_model(service, body.model, host.models.registry)
    params = sampling_params(body, service, host.settings.max_tokens_limit)
    _, model = await host.models.get_llm(name)
    prompt = list(model.tokenizer.encode(body.prompt_text()))
    check_fits(prompt, model, "prompt")
    head = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model.spec.name,
    }
    deltas = model.scheduler.generate(prompt, params)
    if body.stream:
        return await stream_response(
            deltas, head, _choice, include_usage=body.include_usage(), on_finish=_nothing
        )
    text, last = await collect(deltas, request)
    return {**head, "choices": [_choice(text, last.finish_reason)], "usage": usage(last)}
