"""Tool calls in a chat answer: told apart from the text as it streams, in the model's own
format (``ToolCallFormat``: mlx-lm's parser for the model's chat template), and shaped as
OpenAI's ``tool_calls``."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from typing import Any

from mlx_host.generation import ToolCall, ToolCallFormat
from mlx_host.markup import TagSplitter

logger = logging.getLogger(__name__)


class ToolCallReader:
    """Separates the tool calls a model writes from its text, chunk by chunk (a call's markup
    never reaches the text, wherever the chunks cut it). A call that cannot be read is kept
    as text, markup included, so that nothing the model wrote is lost."""

    def __init__(self, fmt: ToolCallFormat, tools: list[dict[str, Any]]) -> None:
        self._fmt = fmt
        self._tools = tools
        self._splitter = TagSplitter(fmt.start, fmt.end)
        self._span: list[str] = []

    def feed(self, text: str, final: bool = False) -> tuple[str, list[ToolCall]]:
        """The text that is certain now, and the calls completed in it (``final``: the
        answer ends here, closing a call still open)."""
        pieces = self._splitter.feed(text) + (self._splitter.flush() if final else [])
        out: list[str] = []
        calls: list[ToolCall] = []
        for piece in pieces:
            if piece.inside:
                self._span.append(piece.text)
            else:
                out.append(piece.text)
            if piece.closed:
                # A span closed by the end of the answer never saw its end tag.
                read, unread = self._read("".join(self._span), piece.tag_seen)
                self._span = []
                calls += read
                out.append(unread)
        return "".join(out), calls

    def _read(self, raw: str, closed: bool) -> tuple[list[ToolCall], str]:
        """The calls in one span, or (when it cannot be read) its text as the model wrote it
        (the end tag only if it came)."""
        try:
            parsed = self._fmt.parse(raw, self._tools)
            found = parsed if isinstance(parsed, list) else [parsed]
            calls = [
                ToolCall(self._new_id(c.get("id")), str(c["name"]), _arguments(c)) for c in found
            ]
        except Exception as exc:  # a parser's own error, on text the model wrote
            # Its message may quote the model's text: only its kind is logged.
            logger.warning(
                "a %s tool call could not be read (%s); it is kept as text",
                self._fmt.family or "model's", type(exc).__name__,
            )  # fmt: skip
            return [], f"{self._fmt.start}{raw}{self._fmt.end if closed else ''}"
        return calls, ""

    def _new_id(self, given: Any) -> str:
        if isinstance(given, str) and given:
            return given
        if self._fmt.family == "mistral":  # Mistral's templates take 9 letters and digits
            return secrets.token_hex(8)[:9]
        return f"call_{uuid.uuid4().hex[:24]}"


def _arguments(call: dict[str, Any]) -> str:
    """A call's arguments as a JSON object's text; ``ValueError`` for anything but an object
    (some models write the object as a JSON string: it is read)."""
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    if not isinstance(arguments, dict):
        raise ValueError("the arguments are not a JSON object")
    return json.dumps(arguments, ensure_ascii=False)


def openai_tool_calls(calls: tuple[ToolCall, ...], streamed: bool) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls`` (streamed deltas also carry each call's ``index``)."""
    return [
        {
            **({"index": c.index} if streamed else {}),
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for c in calls
    ]


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages as chat templates take them: a tool call's arguments as an
    object, not JSON text (its JSON was checked when the request was read)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"],
                                   "arguments": json.loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ]  # fmt: skip
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out
