"""Turning a request's stream of generated text into an HTTP answer: whole, or as server-sent
events (chat's and completions' here; the Responses and Messages APIs shape their own)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from mlx_host.api.access import RequestRecord, record_of
from mlx_host.errors import ClientDisconnectedError, MLXHostError
from mlx_host.generation import Delta

T = TypeVar("T")

#: The 200 of an endpoint that answers JSON, or server-sent events with ``stream: true``.
JSON_OR_EVENTS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}
DISCONNECT_POLL_SECONDS = 0.25
#: Builds one choice of a chunk from a piece of the answer (its text, thinking and log
#: probabilities) and, on the last chunk, the finish reason.
ChoiceBuilder = Callable[[Delta, str | None], dict[str, Any]]
#: Called once the answer is complete with its whole text; returns fields to add to the end.
OnFinish = Callable[[str], Awaitable[dict[str, Any]]]


class StreamedResponse(StreamingResponse):
    """A streamed body whose work is stopped however the response ends: ``close`` (closing
    the engine's generator, freeing its batch slot) runs after the body, also when the client
    left mid-send or before the body started. (Starlette runs a background task only when the
    body ended normally or by its disconnect listener, and never closes the body iterator.)

    The body is server-sent events unless ``media_type`` says otherwise.
    """

    def __init__(
        self,
        content: AsyncIterator[Any],
        *,
        close: Callable[[], Awaitable[Any]],
        media_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            content,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )
        self._body = content
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the body, then close it and run ``close`` (shielded from cancellation)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()  # type: ignore[attr-defined]
                await self._close()


def usage(last: Delta) -> dict[str, Any]:
    """OpenAI's usage object, with the prompt tokens served from the prompt cache."""
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": last.cached_tokens},
    }


async def until_done(work: Awaitable[T], request: Request) -> T:
    """``work``'s result; if the client goes away first, ``work`` is cancelled (freeing its
    batch slot at once) and this raises ``ClientDisconnectedError``."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ClientDisconnectedError("The client disconnected")
    return task.result()


async def collect_deltas(deltas: AsyncIterator[Delta], request: Request) -> list[Delta]:
    """Every delta of the answer (the request's access record gets its token counts)."""

    async def gather() -> list[Delta]:
        async with aclosing(deltas):  # type: ignore[type-var]
            return [d async for d in deltas]

    parts = await until_done(gather(), request)
    record_of(request).usage(parts[-1].prompt_tokens, parts[-1].completion_tokens)
    return parts


async def collect(deltas: AsyncIterator[Delta], request: Request) -> tuple[str, Delta]:
    """The whole answer and its last delta, which carries the finish reason, the counts, the
    whole thinking, every tool call and (when asked for) the log probabilities of every
    token."""
    return merged(await collect_deltas(deltas, request))


def merged(parts: list[Delta]) -> tuple[str, Delta]:
    """``collect``'s answer from every delta of it."""
    last = dataclasses.replace(
        parts[-1],
        logprobs=tuple(e for d in parts for e in d.logprobs),
        reasoning="".join(d.reasoning for d in parts),
        tool_calls=tuple(c for d in parts for c in d.tool_calls),
    )
    return "".join(d.text for d in parts), last


async def shaped_answer(
    deltas: AsyncIterator[Delta],
    request: Request,
    stream: bool,
    events: Callable[[Delta, AsyncIterator[Delta]], AsyncIterator[str]],
    whole: Callable[[list[Delta]], Awaitable[Any]],
) -> Any:
    """The answer in an API's own shape: ``events`` of its first delta and the rest when
    ``stream`` (errors before the first keep their HTTP status), else ``whole`` of every
    delta."""
    if stream:
        first = await first_delta(deltas, request)
        close = deltas.aclose  # type: ignore[attr-defined]
        return StreamedResponse(events(first, deltas), close=close)
    return await whole(await collect_deltas(deltas, request))


def sse_event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def named_sse_event(kind: str, payload: dict[str, Any]) -> str:
    """One server-sent event named ``kind`` carrying ``payload`` with ``type`` ``kind``, as the
    Responses and Messages APIs send them."""
    body = json.dumps({"type": kind, **payload}, ensure_ascii=False)
    return f"event: {kind}\ndata: {body}\n\n"


async def answer_deltas(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """``first`` (``first_delta``'s) and the rest of the answer, through its last delta (the
    one with a finish reason). Whoever streams them closes ``rest``."""
    delta: Delta | None = first
    while delta is not None:
        yield delta
        if delta.finish_reason is not None:
            return
        delta = await anext(rest, None)


async def first_delta(deltas: AsyncIterator[Delta], request: Request) -> Delta:
    """The answer's first piece, awaited before a stream starts (so that errors before any
    output keep their HTTP status), and marked as the first token; gives the request up if
    the client leaves while it waits."""
    first = await until_done(anext(deltas), request)
    record_of(request).first_token()
    return first


async def chunk_events(
    first: Delta,
    rest: AsyncIterator[Delta],
    head: dict[str, Any],
    choice: ChoiceBuilder,
    include_usage: bool,
    on_finish: OnFinish,
    opening: dict[str, Any] | None,
    record: RequestRecord,
) -> AsyncIterator[str]:
    """Chat's and completions' server-sent events: one chunk per piece of text as it is
    generated (after ``opening``, when given), the finish with ``on_finish``'s fields, the
    usage when asked, then ``[DONE]``."""
    if opening is not None:
        yield sse_event({**head, "choices": [opening]})
    last, text = first, []
    async with aclosing(rest):  # type: ignore[type-var]
        try:
            async for delta in answer_deltas(first, rest):
                last = delta
                text.append(delta.text)
                if delta.text or delta.reasoning or delta.logprobs or delta.tool_calls:
                    yield sse_event({**head, "choices": [choice(delta, None)]})
                if delta.finish_reason:
                    record.usage(delta.prompt_tokens, delta.completion_tokens)
                    extra = await on_finish("".join(text))
                    nothing = dataclasses.replace(
                        delta, text="", reasoning="", logprobs=(), tool_calls=()
                    )
                    end = choice(nothing, delta.finish_reason)
                    yield sse_event({**head, "choices": [end], **extra})
        except MLXHostError as exc:
            yield sse_event(exc.body())
            return
    if include_usage:
        yield sse_event({**head, "choices": [], "usage": usage(last)})
    yield "data: [DONE]\n\n"
