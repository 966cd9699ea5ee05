"""Splitting streamed model output at tags (a thinking model's ``<think>`` ... ``</think>``),
chunk by chunk, wherever the chunks happen to cut the tags.

MLX-free pure logic: the chat endpoint uses it to send reasoning apart from the answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Text from inside the tags, or from outside them. ``closed`` marks the end of one
    tagged span (the piece before an end tag; its text may be empty), so that spans that
    follow each other stay apart."""

    inside: bool
    text: str
    closed: bool = False
    tag_seen: bool = True  # a closed span ended at its end tag (not at the end of the text)


class TagSplitter:
    """Routes streamed text to inside or outside one pair of tags, which may come in any
    number of times. Text that could be the start of a tag is held back until the next chunk
    says whether it is one; ``flush`` gives back whatever is still held at the end. An empty
    end tag means a span runs to the end of the text (a tool call that ends the answer).

    ``inside`` says where the text starts (a template may open the tag in the prompt itself).
    """

    def __init__(self, start: str, end: str, inside: bool = False) -> None:
        self._tags = {False: start, True: end}
        self._inside = inside
        self._held = ""

    @property
    def inside(self) -> bool:
        """Whether the text so far ends inside the tags."""
        return self._inside

    def feed(self, text: str) -> list[Piece]:
        """The pieces of ``text`` that are certain now, in order (empty ones only to close a
        span)."""
        pieces: list[Piece] = []
        text = self._held + text
        self._held = ""
        while text:
            tag = self._tags[self._inside]
            at = text.find(tag) if tag else -1
            if at >= 0:
                before = text[:at]
                if self._inside:
                    pieces.append(Piece(True, before, closed=True))
                elif before:
                    pieces.append(Piece(False, before))
                text = text[at + len(tag) :]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(text, tag) if tag else 0
            if text[: len(text) - keep]:
                pieces.append(Piece(self._inside, text[: len(text) - keep]))
            self._held = text[len(text) - keep :]
            break
        return pieces

    def flush(self) -> list[Piece]:
        """What is still held back (a tag's beginning that never completed), as text; a span
        still open is closed."""
        held, self._held = self._held, ""
        if self._inside:
            return [Piece(True, held, closed=True, tag_seen=False)]
        return [Piece(False, held)] if held else []


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
