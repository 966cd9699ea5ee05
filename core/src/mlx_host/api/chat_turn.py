"""One chat turn, from request to saved session: the chat endpoint answers it, and plugin
routes (lbrxvoice's voice turn) use it to answer with their service's policy on the shared
batch and save the turn as a chat turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mlx_host.api.prompt import Messages, build_prompt, request_messages
from mlx_host.api.schemas import ChatCompletionRequest
from mlx_host.api.textgen import TextCall
from mlx_host.generation import Delta, TextGenerator
from mlx_host.host import Host
from mlx_host.models.manager import LoadedModel
from mlx_host.services import ServiceSpec
from mlx_host.sessions import Message


@dataclass
class ChatTurn:
    """A chat request made ready to answer: the service's model and sampling (``call``), the
    loaded model, and the prompt (the policy's system prompt, the session's history, the
    request's messages) fitted to the model's context."""

    host: Host
    call: TextCall
    model: LoadedModel
    engine: TextGenerator
    messages: Messages
    session_id: str | None
    prompt: list[int]
    trimmed: int  # history messages dropped to fit

    @classmethod
    async def prepare(
        cls, host: Host, service: ServiceSpec, body: ChatCompletionRequest
    ) -> ChatTurn:
        """Check ``body`` against the service's policy (400, 403, 404 before anything loads),
        read the session, load the model and build the prompt (413 when it cannot fit)."""
        call = TextCall.plan(host, service, "chat", body)
        history: Messages = []
        if body.session_id is not None:
            stored = await host.sessions.messages(service.name, body.session_id)
            history = [{"role": m.role, "content": m.content} for m in stored]
        model, engine = await call.load()
        messages = request_messages(body.messages)
        prompt, trimmed = build_prompt(
            engine, service.policy, history, messages, call.params.max_tokens
        )
        return cls(host, call, model, engine, messages, body.session_id, prompt, trimmed)

    def generate(self) -> AsyncIterator[Delta]:
        """The answer as it is generated, on the model's shared batch; leaving early cancels
        it."""
        return self.call.generate(self.engine, self.prompt)

    async def finish(self, reply: str) -> dict[str, Any]:
        """Save the request's messages and ``reply`` to the session, if any (call it once the
        answer is complete); the fields a response adds about it."""
        if self.session_id is None:
            return {}
        turn = [Message(**m) for m in self.messages if m["role"] != "system"]
        turn.append(Message(role="assistant", content=reply))
        service = self.call.service.name
        session = await self.host.sessions.append(service, self.session_id, turn)
        return {"session": {"id": session.id, "trimmed_messages": self.trimmed}}
