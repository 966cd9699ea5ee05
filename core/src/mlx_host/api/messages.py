"""``/messages``: Anthropic's Messages API on the caller's service (keys in ``x-api-key`` or
the bearer header, as everywhere).

A request becomes the chat request it means (``MessagesRequest.chat``) and is answered by the
same ``ChatTurn`` as chat completions: the service's policy, model choice, limits, prompt
cache and metrics are one path. Only the shape of the answer is this API's; its errors take
Anthropic's shape (``anthropic_errors``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from mlx_host.api.access import record_of
from mlx_host.api.answer_parts import AnswerParts, Part, PartEvent
from mlx_host.api.answers import (
    JSON_OR_EVENTS,
    named_sse_event,
    shaped_answer,
)
from mlx_host.api.anthropic_errors import AnthropicErrorResponse, anthropic_error_body
from mlx_host.api.chat_turn import ChatTurn
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.messages_schema import FIELD_NAMES, MessagesPrompt, MessagesRequest
from mlx_host.api.schemas import ChatCompletionRequest, fields_renamed
from mlx_host.api.textgen import TextCall
from mlx_host.errors import MLXHostError
from mlx_host.generation import Delta
from mlx_host.host import Host
from mlx_host.services import ServiceSpec

router = APIRouter(
    tags=["messages"],
    responses=error_responses(400, 401, 403, 404, 413, 429, 503, body=AnthropicErrorResponse),
)
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


@router.post("/messages", responses=JSON_OR_EVENTS)
async def create_message(
    body: MessagesRequest, caller: Caller, host: HostDep, request: Request
) -> Any:
    """Create a message (Anthropic's Messages API).

    Content blocks of text, ``tool_use`` and ``tool_result`` are read (earlier ``thinking``
    is accepted and left out); the answer's blocks are ``thinking`` (for models that think),
    ``text`` and ``tool_use``. With ``stream: true`` it arrives as Anthropic's server-sent
    events, from ``message_start`` to ``message_stop``.
    """
    with fields_renamed(FIELD_NAMES):
        chat = await _thinking_off_by_default(host, caller.spec, body, body.chat())
        turn = await ChatTurn.prepare(host, caller.spec, chat)
        answer = _Answer(body, turn, request)
        record_of(request).model = turn.model.name
        return await shaped_answer(
            turn.generate(), request, body.stream, answer.events, answer.whole
        )


@router.post("/messages/count_tokens")
async def count_tokens(
    body: MessagesPrompt, caller: Caller, host: HostDep, request: Request
) -> dict[str, int]:
    """The prompt's tokens, as ``/messages`` would build it for the model (its template,
    tools and the service's system prompt included)."""
    with fields_renamed(FIELD_NAMES):
        # One token of room for the answer: a prompt that fits is counted, never refused.
        chat = body.chat_request(max_tokens=1)
        chat = await _thinking_off_by_default(host, caller.spec, body, chat)
        turn = await ChatTurn.prepare(host, caller.spec, chat)
    record_of(request).model = turn.model.name
    return {"input_tokens": len(turn.prompt)}


async def _thinking_off_by_default(
    host: Host, service: ServiceSpec, body: MessagesPrompt, chat: ChatCompletionRequest
) -> ChatCompletionRequest:
    """``chat`` with thinking switched off where the request does not ask for it (Anthropic's
    default) and the model's template has a switch; a model that always thinks still does."""
    if body.thinking is not None or chat.reasoning_effort is not None:
        return chat
    _, engine = await TextCall.plan(host, service, "chat", chat).load()
    if engine.template_options & {"enable_thinking", "reasoning_effort"}:
        return chat.model_copy(update={"reasoning_effort": "none"})
    return chat


class _Answer:
    """One message: its blocks, whole or as events."""

    def __init__(self, body: MessagesRequest, turn: ChatTurn, request: Request) -> None:
        self.body = body
        self.turn = turn
        self.request = request
        self.id = f"msg_{uuid.uuid4().hex}"
        self.omit_thinking = body.thinking is not None and body.thinking.display == "omitted"

    def block(self, part: Part, done: bool = True) -> dict[str, Any]:
        """``part`` as a content block (empty, as a stream starts it, when not ``done``)."""
        if part.kind == "tool_call":
            assert part.call is not None
            return {"type": "tool_use", "id": part.call.id, "name": part.call.name,
                    "input": json.loads(part.text) if done else {}}  # fmt: skip
        if part.kind == "reasoning":
            thinking = part.text if done and not self.omit_thinking else ""
            return {"type": "thinking", "thinking": thinking, "signature": ""}
        return {"type": "text", "text": part.text if done else ""}

    def message(self, content: list[dict[str, Any]], delta: Delta) -> dict[str, Any]:
        """The message object, as of ``delta`` (why it stopped, once that is the last)."""
        stop_reason = stop_sequence = None
        if delta.finish_reason is not None:
            stop_reason = _STOP_REASONS.get(delta.finish_reason, "end_turn")
            if delta.finish_reason == "stop" and delta.stop_sequence is not None:
                stop_reason, stop_sequence = "stop_sequence", delta.stop_sequence
        cached = delta.cached_tokens
        usage = {
            "input_tokens": delta.prompt_tokens - cached, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0, "output_tokens": delta.completion_tokens,
        }  # fmt: skip
        return {
            "id": self.id, "type": "message", "role": "assistant",
            "model": self.turn.model.name, "content": content, "stop_reason": stop_reason,
            "stop_sequence": stop_sequence, "usage": usage,
        }  # fmt: skip

    async def whole(self, deltas: list[Delta]) -> dict[str, Any]:
        """The message, once the answer is complete."""
        parts = AnswerParts.of(deltas)
        return self.message([self.block(p) for p in parts.parts], deltas[-1])

    async def events(self, first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[str]:
        """Anthropic's server-sent events for the answer; an error after the first event ends
        them with an ``error`` event."""

        def event(kind: str, **fields: Any) -> str:
            return named_sse_event(kind, fields)

        yield event("message_start", message=self.message([], first))
        parts = AnswerParts()
        try:
            async for change in parts.changes(first, rest):
                if (shown := self._block_event(change)) is not None:
                    kind, fields = shown
                    yield event(kind, **fields)
        except MLXHostError as exc:
            yield event("error", **anthropic_error_body(exc.status_code, exc.message))
            return
        last = parts.last or first
        record_of(self.request).usage(last.prompt_tokens, last.completion_tokens)
        done = self.message([], last)
        yield event("message_delta", delta={"stop_reason": done["stop_reason"],
                                            "stop_sequence": done["stop_sequence"]},
                    usage=done["usage"])  # fmt: skip
        yield event("message_stop")

    def _block_event(self, change: PartEvent) -> tuple[str, dict[str, Any]] | None:
        """The event of one change to a part of the answer (None: nothing to send)."""
        part, index = change.part, change.part.index
        if change.kind == "open":
            return "content_block_start", {"index": index, "content_block": self.block(part, False)}
        if change.kind == "close":
            return "content_block_stop", {"index": index}
        if part.kind == "tool_call":
            delta = {"type": "input_json_delta", "partial_json": change.piece}
        elif part.kind == "reasoning":
            if self.omit_thinking:
                return None
            delta = {"type": "thinking_delta", "thinking": change.piece}
        else:
            delta = {"type": "text_delta", "text": change.piece}
        return ("content_block_delta", {"index": index, "delta": delta}) if change.piece else None
