"""Text-level stop sequences for streamed output.

Stop strings are matched on decoded text, not token ids: the same string tokenizes differently
depending on what precedes it, so a token-level match misses some. Text that could still be the
start of a stop string is held back until it is known not to be one.
"""

from __future__ import annotations


class StopMatcher:
    """Cuts a stream of text chunks at the first stop string, never emitting any part of it."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buffer = ""
        #: The stop string that ended the text, once one has.
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return the text now safe to emit and whether a stop string was found."""
        self._buffer += text
        hits = [(i, s) for i, s in ((self._buffer.find(s), s) for s in self._stops) if i >= 0]
        if hits:
            at, self.matched = min(hits)
            out, self._buffer = self._buffer[:at], ""
            return out, True
        cut = len(self._buffer) - self._hold
        if cut <= 0:
            return "", False
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out, False

    def flush(self) -> str:
        """The held-back tail, once the stream has ended without a stop string."""
        out, self._buffer = self._buffer, ""
        return out
