"""``POST /chat/completions``: OpenAI chat completions on the caller's service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.prompt import build_prompt, request_messages
from mlx_host.api.schemas import ChatCompletionRequest
from mlx_host.api.textgen import TextCall, response_head
from mlx_host.generation import Delta
from mlx_host.sessions import Message

router = APIRouter(tags=["chat"], responses=error_responses(400, 401, 403, 404, 413, 429, 503))


@router.post("/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest, caller: Caller, host: HostDep, request: Request
) -> Any:
    """Create a chat completion (OpenAI-compatible).

    With ``stream: true`` the answer arrives as server-sent events, one chunk per piece of
    text as the model produces it, ending with ``data: [DONE]``. With ``session_id`` the
    session's history comes first, and the new messages and the reply are appended to it once
    the answer is complete (nothing is saved when generation fails or the client leaves).
    """
    service = caller.spec
    call = TextCall.plan(host, service, "chat", body)
    history: list[dict[str, str]] = []
    if body.session_id is not None:
        stored = await host.sessions.messages(service.name, body.session_id)
        history = [{"role": m.role, "content": m.content} for m in stored]
    model, engine = await call.load()
    messages = request_messages(body.messages)
    prompt, trimmed = build_prompt(
        engine, service.policy, history, messages, call.params.max_tokens
    )

    async def finish(reply: str) -> dict[str, Any]:
        """Save the turn to the session, if any; what the response says about it."""
        if body.session_id is None:
            return {}
        turn = [Message(**m) for m in messages if m["role"] != "system"]
        turn.append(Message(role="assistant", content=reply))
        session = await host.sessions.append(service.name, body.session_id, turn)
        return {"session": {"id": session.id, "trimmed_messages": trimmed}}

    return await call.answer(
        engine, prompt, response_head("chatcmpl", model), body, request,
        objects=("chat.completion", "chat.completion.chunk"),
        chunk=_chunk_choice, whole=_whole_choice, on_finish=finish,
        opening={"index": 0, "delta": {"role": "assistant", "content": ""},
                 "finish_reason": None},
    )  # fmt: skip


def _chunk_choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish_reason}


def _whole_choice(text: str, last: Delta) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": last.finish_reason,
        "logprobs": None,
    }
