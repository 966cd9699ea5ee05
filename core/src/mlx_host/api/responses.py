"""``/responses``: OpenAI's Responses API on the caller's service, stateful through the session
store (``store`` and ``previous_response_id``).

A request becomes the chat request it means (``ResponseCreateRequest.chat_request``) and is
answered by the same ``ChatTurn`` as chat completions: the service's policy, model choice,
limits, prompt cache and metrics are one path. Only the shape of the answer is this API's.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import time
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
from mlx_host.api.chat_turn import ChatTurn
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.logprobs import chat_logprobs
from mlx_host.api.responses_schema import FIELD_NAMES, INCLUDE_REASONING, ResponseCreateRequest
from mlx_host.api.schemas import fields_renamed
from mlx_host.errors import MLXHostError, NotFoundError
from mlx_host.generation import Delta
from mlx_host.services import ServiceSpec
from mlx_host.sessions import Message, StoredResponse
from mlx_host.sessions.store import new_response_id

router = APIRouter(tags=["responses"], responses=error_responses(400, 401, 403, 404, 413, 429, 503))
_ITEM_PREFIX = {"reasoning": "rs", "text": "msg", "tool_call": "fc"}


@router.post("/responses", responses=JSON_OR_EVENTS)
async def create_response(
    body: ResponseCreateRequest, caller: Caller, host: HostDep, request: Request
) -> Any:
    """Create a model response (OpenAI's Responses API).

    ``input`` is the user's text or a list of items (messages, function calls and their
    outputs); ``previous_response_id`` continues a stored response of the caller's service
    (its conversation comes first; other services' ids are 404). With ``store`` (the
    default) the response is kept, for ``GET`` and for continuing it, in the session store:
    in Redis it survives restarts and is shared by hosts. With ``stream: true`` the answer
    arrives as the Responses API's server-sent events, from ``response.created`` to
    ``response.completed``.
    """
    with fields_renamed(FIELD_NAMES):
        history: list[Message] = []
        if body.previous_response_id is not None:
            try:
                previous = await host.sessions.load_response(
                    caller.spec.name, body.previous_response_id
                )
            except NotFoundError as exc:
                exc.param = "previous_response_id"
                raise
            history = previous.messages
        turn = await ChatTurn.prepare(
            host, _with_truncation(caller.spec, body), body.chat_request(), history,
            body.instructions,
        )  # fmt: skip
        answer = _Answer(body, turn, history, request)
        record_of(request).model = turn.model.name
        return await shaped_answer(
            turn.generate(), request, body.stream, answer.events, answer.whole
        )


@router.get("/responses/{response_id}")
async def get_response(response_id: str, caller: Caller, host: HostDep) -> dict[str, Any]:
    """A stored response, as it was answered; 404 when it does not exist or belongs to
    another service."""
    return (await host.sessions.load_response(caller.spec.name, response_id)).response


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, caller: Caller, host: HostDep) -> dict[str, Any]:
    """Forget a stored response (continuations already made keep their own conversation)."""
    await host.sessions.delete_response(caller.spec.name, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


def _with_truncation(service: ServiceSpec, body: ResponseCreateRequest) -> ServiceSpec:
    """The service with ``truncation``'s rule for history that does not fit: drop the oldest
    (auto), or 413 (disabled, the default)."""
    trim = "oldest" if body.truncation == "auto" else "error"
    policy = service.policy.model_copy(update={"history_trim": trim})
    return dataclasses.replace(service, policy=policy)


class _Answer:
    """One response: its object, whole or as events, and its storing."""

    def __init__(
        self, body: ResponseCreateRequest, turn: ChatTurn, history: list[Message], request: Request
    ) -> None:
        self.body = body
        self.turn = turn
        self.history = history
        self.request = request
        self.id = new_response_id()
        self.created_at = int(time.time())
        self._item_ids: dict[int, str] = {}

    def item_id(self, part: Part) -> str:
        """The id of the output item ``part`` is."""
        if part.index not in self._item_ids:
            self._item_ids[part.index] = f"{_ITEM_PREFIX[part.kind]}_{uuid.uuid4().hex}"
        return self._item_ids[part.index]

    def item(self, part: Part, done: bool = True) -> dict[str, Any]:
        """``part`` as an output item (its content so far, when not ``done``)."""
        status = "completed" if done else "in_progress"
        if part.kind == "tool_call":
            assert part.call is not None
            return {"id": self.item_id(part), "type": "function_call", "status": status,
                    "call_id": part.call.id, "name": part.call.name,
                    "arguments": part.text if done else ""}  # fmt: skip
        if part.kind == "reasoning":
            item: dict[str, Any] = {"id": self.item_id(part), "type": "reasoning", "summary": [],
                                    "content": [self.content(part)] if done else []}  # fmt: skip
            if INCLUDE_REASONING in (self.body.include or ()):
                item["encrypted_content"] = base64.b64encode(part.text.encode()).decode()
            return item
        return {"id": self.item_id(part), "type": "message", "role": "assistant",
                "status": status, "content": [self.content(part)] if done else []}  # fmt: skip

    def content(self, part: Part, text: str | None = None) -> dict[str, Any]:
        """The one content part of a message or reasoning item."""
        text = part.text if text is None else text
        if part.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        content: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
        if self.turn.call.params.logprobs is not None:
            content["logprobs"] = _logprobs(part) if text else []
        return content

    def response(
        self, status: str, output: list[dict[str, Any]], last: Delta | None = None
    ) -> dict[str, Any]:
        """The response object."""
        body, params = self.body, self.turn.call.params
        text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {}
        choice = body.tool_choice or "auto"
        response: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.turn.model.name, "output": output,
            "error": None, "incomplete_details": None, "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id, "store": body.store,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "text": {"format": {"type": "text"}, **text},
            "reasoning": body.reasoning.model_dump() if body.reasoning else None,
            "truncation": body.truncation or "disabled", "top_logprobs": body.top_logprobs,
            "metadata": body.metadata or {}, "user": body.user, "background": False,
            "usage": None,
        }  # fmt: skip
        if last is not None:
            if last.finish_reason == "length":
                response["incomplete_details"] = {"reason": "max_output_tokens"}
            thinking = "".join(self.turn.reasoning)
            reasoning = len(self.turn.engine.encode(thinking)) if thinking else 0
            response["usage"] = {
                "input_tokens": last.prompt_tokens,
                "input_tokens_details": {"cached_tokens": last.cached_tokens},
                "output_tokens": last.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": last.prompt_tokens + last.completion_tokens,
            }
            response["completed_at"] = int(time.time())
        return response

    async def finish(self, parts: AnswerParts, last: Delta) -> dict[str, Any]:
        """The complete response, stored when the request asks."""
        status = "incomplete" if last.finish_reason == "length" else "completed"
        response = self.response(status, [self.item(p) for p in parts.parts], last)
        if self.body.store:
            kept = self.history[self.turn.trimmed :]
            own = [Message(**m) for m in self.turn.messages]
            messages = [*kept, *own, self.turn.reply_message(parts.text)]
            await self.turn.host.sessions.save_response(
                self.turn.call.service.name, StoredResponse(id=self.id, response=response,
                                                            messages=messages),
            )  # fmt: skip
        return response

    async def whole(self, deltas: list[Delta]) -> dict[str, Any]:
        """The response, once the answer is complete (stored when asked)."""
        return await self.finish(AnswerParts.of(deltas), deltas[-1])

    async def events(self, first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[str]:
        """The Responses API's server-sent events for the answer; an error after the first
        event ends them with ``error`` and ``response.failed``."""
        numbers = itertools.count()

        def event(kind: str, **fields: Any) -> str:
            return named_sse_event(kind, {"sequence_number": next(numbers), **fields})

        yield event("response.created", response=self.response("in_progress", []))
        yield event("response.in_progress", response=self.response("in_progress", []))
        parts = AnswerParts()
        try:
            async for change in parts.changes(first, rest):
                for kind, fields in self._item_events(change):
                    yield event(kind, **fields)
            last = parts.last or first
            record_of(self.request).usage(last.prompt_tokens, last.completion_tokens)
            response = await self.finish(parts, last)
        except MLXHostError as exc:
            code = exc.code or exc.error_type
            yield event("error", code=code, message=exc.message, param=exc.param)
            cut = parts.open_part
            items = [self.item(p, done=p is not cut) for p in parts.parts]
            failed = self.response("failed", items)
            failed["error"] = {"code": code, "message": exc.message}
            yield event("response.failed", response=failed)
            return
        yield event(f"response.{response['status']}", response=response)

    def _item_events(self, change: PartEvent) -> list[tuple[str, dict[str, Any]]]:
        """The events of one change to a part of the answer."""
        part = change.part
        where = {"item_id": self.item_id(part), "output_index": part.index}
        if change.kind == "open":
            added = [
                (
                    "response.output_item.added",
                    {"output_index": part.index, "item": self.item(part, done=False)},
                )
            ]
            if part.kind == "tool_call":
                return added
            return [
                *added,
                (
                    "response.content_part.added",
                    {**where, "content_index": 0, "part": self.content(part, "")},
                ),
            ]
        if part.kind == "tool_call":
            if change.kind == "grow":
                return [
                    ("response.function_call_arguments.delta", {**where, "delta": change.piece})
                ]
            done = {**where, "name": part.call.name if part.call else "", "arguments": part.text}
            return [("response.function_call_arguments.done", done),
                    ("response.output_item.done",
                     {"output_index": part.index, "item": self.item(part)})]  # fmt: skip
        kind = "reasoning_text" if part.kind == "reasoning" else "output_text"
        where["content_index"] = 0
        if change.kind == "grow":
            fields = {**where, "delta": change.piece}
            if part.kind == "text":
                fields["logprobs"] = chat_logprobs(change.logprobs)["content"]
            return [(f"response.{kind}.delta", fields)] if change.piece or change.logprobs else []
        done = {**where, "text": part.text}
        if part.kind == "text":
            done["logprobs"] = _logprobs(part)
        return [(f"response.{kind}.done", done),
                ("response.content_part.done", {**where, "part": self.content(part)}),
                ("response.output_item.done",
                 {"output_index": part.index, "item": self.item(part)})]  # fmt: skip


def _logprobs(part: Part) -> list[dict[str, Any]]:
    return chat_logprobs(part.logprobs)["content"]
