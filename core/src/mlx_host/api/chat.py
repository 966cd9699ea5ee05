"""``POST /chat/completions``: OpenAI chat completions on the caller's service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlx_host.api.answers import JSON_OR_EVENTS
from mlx_host.api.chat_turn import ChatTurn
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.logprobs import chat_logprobs
from mlx_host.api.schemas import ChatCompletionRequest
from mlx_host.api.textgen import response_head
from mlx_host.api.tool_calls import openai_tool_calls
from mlx_host.generation import Delta

router = APIRouter(tags=["chat"], responses=error_responses(400, 401, 403, 404, 413, 429, 503))


@router.post("/chat/completions", responses=JSON_OR_EVENTS)
async def create_chat_completion(
    body: ChatCompletionRequest, caller: Caller, host: HostDep, request: Request
) -> Any:
    """Create a chat completion (OpenAI-compatible).

    With ``stream: true`` the answer arrives as server-sent events, one chunk per piece of
    text as the model produces it, ending with ``data: [DONE]``. With ``session_id`` the
    session's history comes first, and the new messages and the reply are appended to it once
    the answer is complete (nothing is saved when generation fails or the client leaves).
    """
    turn = await ChatTurn.prepare(host, caller.spec, body)
    return await turn.call.answer(
        turn.generate(), response_head("chatcmpl", turn.model), body, request,
        objects=("chat.completion", "chat.completion.chunk"),
        chunk=_chunk_choice, whole=_whole_choice, on_finish=turn.finish,
        opening={"index": 0, "delta": {"role": "assistant", "content": ""},
                 "finish_reason": None},
    )  # fmt: skip


def _chunk_choice(piece: Delta, finish_reason: str | None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if piece.reasoning:
        delta["reasoning_content"] = piece.reasoning
    if piece.text:
        delta["content"] = piece.text
    if piece.tool_calls:
        delta["tool_calls"] = openai_tool_calls(piece.tool_calls, streamed=True)
    return {
        "index": 0,
        "delta": delta,
        "logprobs": chat_logprobs(piece.logprobs) if piece.logprobs else None,
        "finish_reason": finish_reason,
    }


def _whole_choice(text: str, last: Delta) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if last.reasoning:
        message["reasoning_content"] = last.reasoning
    if last.tool_calls:
        message["tool_calls"] = openai_tool_calls(last.tool_calls, streamed=False)
        # Whitespace around the calls' markup is no answer of its own.
        message["content"] = text.rstrip() or None
    return {
        "index": 0,
        "message": message,
        "finish_reason": last.finish_reason,
        "logprobs": chat_logprobs(last.logprobs) if last.logprobs else None,
    }
