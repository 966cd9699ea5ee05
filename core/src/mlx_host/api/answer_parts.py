"""An answer as a list of parts in the order the model wrote them (its thinking, its text,
each tool call), the shape of the Responses API's output items and the Messages API's content
blocks. Both present a part as it opens, grows and closes, whole or streamed.

One rule makes a streamed answer reassemble to the whole one: whitespace alone opens no part,
and whitespace at the end of a part is held back until more text follows (the blank line
between thinking and answer, or the newline between tool calls, is no part of either).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from mlx_host.api.answers import answer_deltas
from mlx_host.generation import Delta, TokenLogprob, ToolCall

PartKind = Literal["reasoning", "text", "tool_call"]


@dataclass
class Part:
    """One part of an answer: ``text`` is the thinking or the answer's text (a tool call's
    arguments for ``tool_call``), ``index`` its place among the answer's parts."""

    kind: PartKind
    index: int
    text: str = ""
    call: ToolCall | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class PartEvent:
    """What happened to a part: it ``open``\\ ed, ``grow``\\ s by ``piece`` (with the log
    probabilities of the tokens that made it), or ``close``\\ d."""

    kind: Literal["open", "grow", "close"]
    part: Part
    piece: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()


class AnswerParts:
    """Turns an answer's deltas into parts, delta by delta (``feed``), so that streamed and
    whole answers are built the same way."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        #: The answer's text as the model wrote it (what a later turn's history keeps).
        self.text = ""
        #: The latest delta fed (the last one, with the counts and the finish, once done).
        self.last: Delta | None = None
        self._open: Part | None = None
        self._held = ""  # trailing whitespace of the open part, not yet sent

    @classmethod
    def of(cls, deltas: list[Delta]) -> AnswerParts:
        """The parts of a whole answer."""
        parts = cls()
        for delta in deltas:
            parts.feed(delta)
        return parts

    async def changes(self, first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[PartEvent]:
        """Feed the answer (``first``, then ``rest`` through its last delta, which ``last``
        then holds) and yield each change as it comes; errors of the answer are raised here,
        and ``rest`` is closed however this ends."""
        async with aclosing(rest):  # type: ignore[type-var]
            async for delta in answer_deltas(first, rest):
                for change in self.feed(delta):
                    yield change

    @property
    def open_part(self) -> Part | None:
        """The part still growing (None between parts and once the answer is done)."""
        return self._open

    def feed(self, delta: Delta) -> list[PartEvent]:
        """The events of one delta (the last one closes the open part)."""
        self.last = delta
        self.text += delta.text
        events = []
        if delta.reasoning:
            events += self._grow("reasoning", delta.reasoning, ())
        if delta.text or delta.logprobs:
            events += self._grow("text", delta.text, delta.logprobs)
        for call in delta.tool_calls:
            events += self._close()
            part = Part("tool_call", len(self.parts), call.arguments, call)
            self.parts.append(part)
            events += [PartEvent("open", part), PartEvent("grow", part, call.arguments),
                       PartEvent("close", part)]  # fmt: skip
        if delta.finish_reason is not None:
            events += self._close()
        return events

    def _grow(
        self, kind: PartKind, text: str, logprobs: tuple[TokenLogprob, ...]
    ) -> list[PartEvent]:
        events: list[PartEvent] = []
        if self._open is not None and self._open.kind != kind:
            events += self._close()
        if self._open is None:
            if not text.strip():
                return events  # whitespace opens nothing (its tokens' probabilities go too)
            text = text.lstrip()
            self._open = Part(kind, len(self.parts))
            self.parts.append(self._open)
            events.append(PartEvent("open", self._open))
        part = self._open
        body = text.rstrip()
        piece = self._held + body if body else ""
        self._held = (self._held if not body else "") + text[len(body) :]
        part.text += piece
        part.logprobs += logprobs
        if piece or logprobs:
            events.append(PartEvent("grow", part, piece, logprobs))
        return events

    def _close(self) -> list[PartEvent]:
        part, self._open, self._held = self._open, None, ""
        return [PartEvent("close", part)] if part is not None else []
