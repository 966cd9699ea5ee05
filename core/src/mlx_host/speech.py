"""What a speech request asks of a text-to-speech engine and what it gets back, and how text
that arrives a piece at a time (an LLM's answer) is cut into sentences to speak.

Free of MLX (like ``generation``), so routers, plugins and tests can use them without it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mlx_host.errors import InvalidRequestError

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Voice:
    """A voice a speech model speaks in; requests may name it or any of its aliases."""

    name: str
    language: str  # BCP 47, e.g. en-US
    gender: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""

    def answers_to(self, name: str) -> bool:
        """Whether a request's ``voice`` names this voice."""
        return name == self.name or name in self.aliases


@dataclass(frozen=True)
class SpeechOptions:
    """How to speak (already checked by the API), and who asks for which model (the name the
    service chose; a stand-in may serve it)."""

    service: str
    model: str
    voice: str  # a voice's name (not an alias)
    speed: float = 1.0
    instructions: str | None = None


@runtime_checkable
class Synthesizer(Protocol):
    """What engines of ``tts`` models offer the API (and plugin routes)."""

    #: Samples per second of the audio it produces (mono float32).
    sample_rate: int
    #: The slowest and fastest ``speed`` it takes (1.0 is its natural pace).
    speed_range: tuple[float, float]
    #: Whether it uses ``instructions`` (tone, accent, pace described in words).
    follows_instructions: bool

    def voices(self) -> list[Voice]:
        """The voices it can speak in on this machine (nothing to download)."""
        ...

    def synthesize(self, text: str, options: SpeechOptions) -> AsyncIterator[Samples]:
        """Speak ``text``: audio a sentence at a time, each as soon as it is ready. Leaving
        early cancels the rest."""
        ...


def find_voice(voices: list[Voice], name: str) -> Voice | None:
    """The voice ``name`` names, if any."""
    return next((v for v in voices if v.answers_to(name)), None)


def choose_voice(voices: list[Voice], requested: str | None, service_default: str | None) -> Voice:
    """The voice a request gets: the one it names (400 listing the valid ones when the model
    lacks it), else the service's where the model has it, else the model's first."""
    if requested is None:
        return find_voice(voices, service_default or "") or voices[0]
    voice = find_voice(voices, requested)
    if voice is None:
        raise InvalidRequestError(
            f"voice {requested!r} is not installed for this model; valid voices: "
            f"{', '.join(v.name for v in voices)}",
            param="voice",
            code="unsupported_voice",
        )
    return voice


def check_speed(engine: Synthesizer, speed: float, model: str) -> None:
    """400 for a speed outside what the model takes."""
    low, high = engine.speed_range
    if not low <= speed <= high:
        raise InvalidRequestError(
            f"speed {speed} is outside what the model {model!r} takes ({low} to {high})",
            param="speed",
        )


# A sentence ends at . ! ? or … (closing quotes and brackets may follow) before whitespace.
_SENTENCE_END = re.compile("[.!?\u2026][\"'\u201d\u2019)\\]]*\\s+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
#: Words after which a period does not end a sentence ("Dr. Smith").
_ABBREVIATIONS = frozenset(
    ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e",
     "approx", "fig", "dept", "est", "inc", "ltd", "co")
)  # fmt: skip
#: Longer than this, a sentence is given out in parts cut at a clause (a comma, ...), else
#: between words.
MAX_SENTENCE_CHARS = 200


def _ends_sentence(text: str, punctuation_at: int) -> bool:
    """Whether the punctuation ends a sentence: a period does not after a title or an
    initial ("Dr.", "J."), nor after the number of a numbered list ("1. Preheat ...")."""
    if text[punctuation_at] != ".":
        return True
    line = text[:punctuation_at].rsplit("\n", 1)[-1]
    words = line.split()
    if not words:
        return True
    word = words[-1].lstrip("(\"'\u201c\u2018").lower()
    list_number = len(words) == 1 and word.isdigit()
    return not (word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or list_number)


def _long_cut(head: str) -> int:
    """Where to cut a sentence too long to wait for: its last clause break, else its last
    space, in ``head`` (its first ``MAX_SENTENCE_CHARS`` characters)."""
    clauses = list(_CLAUSE_END.finditer(head))
    if clauses:
        return clauses[-1].end()
    space = head.rfind(" ")
    return space + 1 if space > 0 else len(head)


class SentenceSplitter:
    """Cuts text that arrives in pieces into sentences, each given out as soon as it is
    complete, so that speech can start before the whole text exists.

    A sentence is complete at its end punctuation followed by whitespace, or at a line break;
    one longer than ``MAX_SENTENCE_CHARS`` is given out in parts (``_long_cut``).
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        """Add ``text``; the sentences it completed."""
        self._pending += text
        done: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return done
            sentence, self._pending = self._pending[:cut].strip(), self._pending[cut:]
            if sentence:
                done.append(sentence)

    def flush(self) -> list[str]:
        """The rest, once no more text will come."""
        rest, self._pending = self._pending, ""
        parts = []
        while len(rest) > MAX_SENTENCE_CHARS:
            cut = _long_cut(rest[:MAX_SENTENCE_CHARS])
            parts.append(rest[:cut])
            rest = rest[cut:]
        return [p.strip() for p in (*parts, rest) if p.strip()]

    def _next_cut(self) -> int | None:
        text, limit = self._pending, MAX_SENTENCE_CHARS
        line = text.find("\n")
        for match in _SENTENCE_END.finditer(text):
            if match.start() >= limit or (line != -1 and line < match.start()):
                break
            if _ends_sentence(text, match.start()):
                return match.end()
        if line != -1 and line < limit:
            return line + 1
        if len(text) > limit:
            return _long_cut(text[:limit])
        return None


# Emphasis, strike-through and code spans (underscores only at word edges, as Markdown reads
# them: snake_case stays), and the marks that start a line: headings, quotes, list bullets.
_SPANS = re.compile(r"(\*\*|\*|~~|`+|(?<!\w)__|(?<!\w)_)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_LINE_MARKS = re.compile(r"^[ \t]*(?:#+|>|[-+*•]|\d+[.)])[ \t]+", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def speakable(text: str) -> str:
    """``text`` without Markdown's marks (emphasis, code ticks, headings, quotes, list bullets,
    link targets), which a voice would otherwise read out or stumble over."""
    return _SPANS.sub(r"\2", _LINE_MARKS.sub("", _LINK.sub(r"\1", text)))
