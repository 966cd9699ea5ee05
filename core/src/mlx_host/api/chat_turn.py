"""One chat turn, from request to saved session: the chat endpoint answers it, and plugin
routes (lbrxvoice's voice turn) use it to answer with their service's policy on the shared
batch and save the turn as a chat turn."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from mlx_host.api.prompt import Messages, build_prompt, request_messages, template_options
from mlx_host.api.schemas import ChatCompletionRequest
from mlx_host.api.textgen import TextCall
from mlx_host.generation import Delta, TextGenerator
from mlx_host.host import Host
from mlx_host.markup import TagSplitter
from mlx_host.models.manager import LoadedModel
from mlx_host.services import ServiceSpec
from mlx_host.sessions import Message


@dataclass
class ChatTurn:
    """A chat request made ready to answer: the service's model and sampling (``call``), the
    loaded model, and the prompt (the policy's system prompt, the session's history, the
    request's messages) fitted to the model's context.

    For a model that thinks in tags, the answer's deltas carry the thinking apart from the
    text (``Delta.reasoning``), wherever the stream cuts the tags."""

    host: Host
    call: TextCall
    model: LoadedModel
    engine: TextGenerator
    messages: Messages
    session_id: str | None
    prompt: list[int]
    trimmed: int  # history messages dropped to fit
    keep_reasoning: bool = False
    reasoning: list[str] = field(default_factory=list)  # the thinking, as it was generated

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
        options = template_options(body, engine, call.model_name)
        messages = request_messages(body.messages)
        prompt, trimmed = build_prompt(
            engine, service.policy, history, messages, call.params.max_tokens, options
        )
        return cls(
            host, call, model, engine, messages, body.session_id, prompt, trimmed,
            body.keep_reasoning,
        )  # fmt: skip

    def generate(self) -> AsyncIterator[Delta]:
        """The answer as it is generated, on the model's shared batch; leaving early cancels
        it."""
        deltas = self.call.generate(self.engine, self.prompt)
        tags = self.engine.reasoning_tags
        return deltas if tags is None else self._split_reasoning(deltas, tags)

    async def _split_reasoning(
        self, deltas: AsyncIterator[Delta], tags: tuple[str, str]
    ) -> AsyncIterator[Delta]:
        # A template may open the thinking in the prompt itself (the model then writes only
        # the closing tag).
        tail = self.engine.decode(self.prompt[-8:]).rstrip()
        splitter = TagSplitter(*tags, inside=tail.endswith(tags[0]))
        answered = False
        async with aclosing(deltas):  # type: ignore[type-var]
            async for delta in deltas:
                pieces = splitter.feed(delta.text)
                if delta.finish_reason:
                    pieces += splitter.flush()
                reasoning = "".join(p.text for p in pieces if p.inside)
                text = "".join(p.text for p in pieces if not p.inside)
                if not answered:  # templates put a blank line between thinking and answer
                    text = text.lstrip()
                    answered = bool(text)
                self.reasoning.append(reasoning)
                yield dataclasses.replace(delta, text=text, reasoning=reasoning)

    async def finish(self, reply: str) -> dict[str, Any]:
        """Save the request's messages and ``reply`` to the session, if any (call it once the
        answer is complete); the fields a response adds about it."""
        if self.session_id is None:
            return {}
        turn = [Message(**m) for m in self.messages if m["role"] != "system"]
        thinking = "".join(self.reasoning)
        if self.keep_reasoning and thinking and self.engine.reasoning_tags:
            start, end = self.engine.reasoning_tags
            reply = f"{start}{thinking}{end}\n\n{reply}"
        turn.append(Message(role="assistant", content=reply))
        service = self.call.service.name
        session = await self.host.sessions.append(service, self.session_id, turn)
        return {"session": {"id": session.id, "trimmed_messages": self.trimmed}}
