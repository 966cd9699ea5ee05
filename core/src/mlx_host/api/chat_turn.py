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
from mlx_host.api.tool_calls import ToolCallReader, openai_tool_calls
from mlx_host.errors import InvalidRequestError
from mlx_host.generation import Delta, TextGenerator, ToolCall
from mlx_host.host import Host
from mlx_host.json_grammar import tool_call_grammar
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
    tools: list[dict[str, Any]] | None = None  # offered to the model (tool_choice not none)
    reasoning: list[str] = field(default_factory=list)  # the thinking, as it was generated
    calls: list[ToolCall] = field(default_factory=list)  # the tool calls it made

    @classmethod
    async def prepare(
        cls,
        host: Host,
        service: ServiceSpec,
        body: ChatCompletionRequest,
        history: list[Message] | None = None,
        instructions: str | None = None,
    ) -> ChatTurn:
        """Check ``body`` against the service's policy (400, 403, 404 before anything loads),
        read the session's history (or take the ``history`` given, for a request without a
        session), load the model and build the prompt (413 when it cannot fit), after
        ``instructions`` when given (a system message ahead of the history)."""
        assert history is None or body.session_id is None, "one history, not two"
        call = TextCall.plan(host, service, "chat", body)
        if body.session_id is not None:
            history = await host.sessions.messages(service.name, body.session_id)
        previous = [m.chat_message() for m in history or ()]
        model, engine = await call.load()
        options = template_options(body, engine, call.model_name)
        if "tools" in options and body.response_format is None:
            # The service's default format would forbid the markup of the tools' calls.
            call = dataclasses.replace(call, format=None)
        forced, function = body.forced_tool()
        if forced and "tools" in options:
            if call.format is not None:
                raise InvalidRequestError(
                    "response_format cannot be combined with a forced tool_choice",
                    param="response_format",
                )
            assert engine.tool_format is not None  # template_options checked it
            grammar = tool_call_grammar(
                engine.tool_format,
                options["tools"],
                function,
                body.parallel_tool_calls is not False,
            )
            call = dataclasses.replace(call, format=grammar)
        elif body.parallel_tool_calls is False and body.tools:
            raise InvalidRequestError(
                "parallel_tool_calls false is enforced only with tool_choice required or a "
                "named function",
                param="parallel_tool_calls",
                code="unsupported_parameter",
            )
        messages = request_messages(body.messages)
        prompt, trimmed = build_prompt(
            engine, service.policy, previous, messages, call.params.max_tokens, options,
            instructions,
        )  # fmt: skip
        return cls(
            host, call, model, engine, messages, body.session_id, prompt, trimmed,
            body.keep_reasoning, options.get("tools"),
        )  # fmt: skip

    def generate(self) -> AsyncIterator[Delta]:
        """The answer as it is generated, on the model's shared batch; leaving early cancels
        it."""
        deltas = self.call.generate(self.engine, self.prompt)
        if self.engine.reasoning_tags is None and self.tools is None:
            return deltas
        return self._shape(deltas)

    async def _shape(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """The deltas with the thinking in ``reasoning`` and the tool calls in ``tool_calls``,
        apart from the text."""
        thinking = None
        if tags := self.engine.reasoning_tags:
            # A template may open the thinking in the prompt itself (the model then writes
            # only the closing tag), unless a grammar holds the answer from its first token:
            # then no thinking comes, and all of it is the answer.
            tail = self.engine.decode(self.prompt[-8:]).rstrip()
            opened = tail.endswith(tags[0]) and self.call.format is None
            thinking = TagSplitter(*tags, inside=opened)
        reader = None
        if self.tools is not None and self.engine.tool_format is not None:
            reader = ToolCallReader(self.engine.tool_format, self.tools)
        answered = False
        async with aclosing(deltas):  # type: ignore[type-var]
            async for delta in deltas:
                final = delta.finish_reason is not None
                reasoning, text = "", delta.text
                if thinking is not None:
                    pieces = thinking.feed(text) + (thinking.flush() if final else [])
                    reasoning = "".join(p.text for p in pieces if p.inside)
                    text = "".join(p.text for p in pieces if not p.inside)
                calls: list[ToolCall] = []
                if reader is not None:
                    text, read = reader.feed(text, final)
                    calls = [dataclasses.replace(c, index=len(self.calls) + i)
                             for i, c in enumerate(read)]  # fmt: skip
                if not answered:  # templates put a blank line between thinking and answer
                    text = text.lstrip()
                    answered = bool(text)
                self.reasoning.append(reasoning)
                self.calls += calls
                finish = delta.finish_reason
                if finish == "stop" and self.calls:
                    finish = "tool_calls"
                yield dataclasses.replace(
                    delta, text=text, reasoning=reasoning, tool_calls=tuple(calls),
                    finish_reason=finish,
                )  # fmt: skip

    def reply_message(self, reply: str) -> Message:
        """The answer as the history of a later turn keeps it: its text (after the thinking,
        when ``keep_reasoning``) and its tool calls."""
        thinking = "".join(self.reasoning)
        if self.keep_reasoning and thinking and self.engine.reasoning_tags:
            start, end = self.engine.reasoning_tags
            reply = f"{start}{thinking}{end}\n\n{reply}"
        calls = openai_tool_calls(tuple(self.calls), streamed=False) if self.calls else None
        return Message(role="assistant", content=reply, tool_calls=calls)

    async def finish(self, reply: str) -> dict[str, Any]:
        """Save the request's messages and ``reply`` to the session, if any (call it once the
        answer is complete); the fields a response adds about it."""
        if self.session_id is None:
            return {}
        turn = [Message(**m) for m in self.messages if m["role"] != "system"]
        turn.append(self.reply_message(reply))
        service = self.call.service.name
        session = await self.host.sessions.append(service, self.session_id, turn)
        return {"session": {"id": session.id, "trimmed_messages": self.trimmed}}
