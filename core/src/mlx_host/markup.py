"""Splitting streamed model output at tags (a thinking model's ``<think>`` ... ``</think>``),
chunk by chunk, wherever the chunks happen to cut the tags.

MLX-free pure logic: the chat endpoint uses it to send reasoning apart from the answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Text from inside the tags, or from outside them."""

    inside: bool
    text: str


class TagSplitter:
    """Routes streamed text to inside or outside one pair of tags, which may come in any
    number of times. Text that could be the start of a tag is held back until the next chunk
    says whether it is one; ``flush`` gives back whatever is still held at the end.

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
        """The pieces of ``text`` that are certain now, in order (never empty ones)."""
        pieces: list[Piece] = []
        text = self._held + text
        self._held = ""
        while text:
            tag = self._tags[self._inside]
            at = text.find(tag)
            if at >= 0:
                self._add(pieces, text[:at])
                text = text[at + len(tag) :]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(text, tag)
            self._add(pieces, text[: len(text) - keep])
            self._held = text[len(text) - keep :]
            break
        return pieces

    def flush(self) -> list[Piece]:
        """What is still held back (a tag's beginning that never completed), as text."""
        held, self._held = self._held, ""
        return [Piece(self._inside, held)] if held else []

    def _add(self, pieces: list[Piece], text: str) -> None:
        if text:
            pieces.append(Piece(self._inside, text))


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
