"""``POST /chat/completions``: OpenAI chat completions on the caller's service."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.schemas import ChatCompletionRequest
from mlx_host.engine.scheduler import Delta, SamplingParams
from mlx_host.errors import (
    InvalidRequestError,
    MLXHostError,
    PermissionDeniedError,
    RequestTooLargeError,
)
from mlx_host.models.manager import LoadedModel
from mlx_host.services import ServiceSpec

router = APIRouter(tags=["chat"])


def choose_model(service: ServiceSpec, requested: str | None) -> str:
    """The model name to serve: the service default unless the caller may have another."""
    name = service.default_model if requested in (None, "", "default") else requested
    if not service.policy.allows(name, service.default_model):
        raise PermissionDeniedError(
            f"The {service.name!r} service may not use the model {name!r}",
            param="model",
            code="model_not_allowed",
        )
    return name


def sampling_params(
    body: ChatCompletionRequest, service: ServiceSpec, limit: int
) -> SamplingParams:
    """The request's sampling parameters with the service's defaults filled in and caps applied."""
    policy = service.policy
    max_tokens = body.max_completion_tokens or body.max_tokens or policy.max_tokens
    cap = min(policy.max_tokens_cap, limit)
    if max_tokens > cap:
        raise InvalidRequestError(
            f"max_tokens {max_tokens} exceeds the {service.name!r} service's cap of {cap}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=policy.temperature if body.temperature is None else body.temperature,
        top_p=policy.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
    )


def encode_prompt(
    body: ChatCompletionRequest, service: ServiceSpec, model: LoadedModel
) -> list[int]:
    """Apply the service's system prompt and the model's chat template; check the context."""
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
    ]
    system = service.policy.system_prompt
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    try:
        prompt = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as exc:
        raise InvalidRequestError(
            f"The messages do not fit the model's chat template: {exc}", param="messages"
        ) from exc
    if model.context_length and len(prompt) >= model.context_length:
        raise RequestTooLargeError(
            f"The prompt is {len(prompt)} tokens; the model's context is "
            f"{model.context_length} tokens",
            param="messages",
        )
    return list(prompt)


def _usage(last: Delta) -> dict[str, int]:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
    }


@router.post("/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, caller: Caller, host: HostDep):
    """Create a chat completion (OpenAI-compatible).

    With ``stream: true`` the answer arrives as server-sent events, one chunk per piece of
    text as the model produces it, ending with ``data: [DONE]``.
    """
    service = caller.spec
    name = choose_model(service, body.model)
    params = sampling_params(body, service, host.settings.max_tokens_limit)
    _, model = await host.models.get_llm(name)
    prompt = encode_prompt(body, service, model)
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": model.spec.name,
    }
    deltas = model.scheduler.generate(prompt, params)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # Wait for the first piece so that errors before any output keep their HTTP status.
        first = await anext(deltas)
        return StreamingResponse(
            _stream(head, first, deltas, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    async with aclosing(deltas):
        parts = [d async for d in deltas]
    last = parts[-1]
    return {
        **head,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(d.text for d in parts)},
                "finish_reason": last.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(last),
    }


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(
    head: dict[str, Any], first: Delta, rest: AsyncIterator[Delta], include_usage: bool
) -> AsyncIterator[str]:
    chunk = {**head, "object": "chat.completion.chunk"}

    def choice(delta: dict[str, str], finish_reason: str | None = None) -> str:
        return _event(
            {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        )

    yield choice({"role": "assistant", "content": ""})
    last = first
    async with aclosing(rest):
        try:
            delta: Delta | None = first
            while delta is not None:
                last = delta
                if delta.text:
                    yield choice({"content": delta.text})
                if delta.finish_reason:
                    yield choice({}, delta.finish_reason)
                    break
                delta = await anext(rest, None)
        except MLXHostError as exc:
            yield _event(exc.body())
            return
    if include_usage:
        yield _event({**chunk, "choices": [], "usage": _usage(last)})
    yield "data: [DONE]\n\n"
