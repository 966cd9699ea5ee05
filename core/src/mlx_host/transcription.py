"""What a transcription asks of a speech-to-text engine and what it gets back.

Free of MLX (like ``generation``), so routers, plugins and tests can use them without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Protocol, runtime_checkable

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class TranscriptionOptions:
    """How to transcribe (already checked by the API), and who asks for which model (the name
    the service chose; a stand-in may serve it)."""

    service: str
    model: str
    task: Task = "transcribe"
    language: str | None = None  # ISO 639-1; None: detected (English-only models: "en")
    prompt: str | None = None  # text that came before, or words to expect
    temperature: float = 0.0  # 0: greedy, falling back to higher ones on failure
    word_timestamps: bool = False
    stream: bool = False  # text as it is decoded; no fallback (what was sent stays sent)


@dataclass(frozen=True)
class Word:
    """One word and when it was said, in seconds from the start of the audio."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, as Whisper timestamps it."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class TranscriptPiece:
    """Text as it is decoded (``delta``), or, once, the end (``result``)."""

    delta: str = ""
    result: Transcript | None = None


@dataclass(frozen=True)
class Transcript:
    """The whole transcription."""

    text: str
    language: str
    duration: float  # seconds of audio
    segments: list[Segment]
    output_tokens: int


@runtime_checkable
class Transcriber(Protocol):
    """What engines of ``stt`` models offer the API (and plugin routes)."""

    #: Whether the model knows languages other than English (and can translate them).
    multilingual: bool
    #: The ISO-639-1 codes of the languages it transcribes.
    languages: frozenset[str]

    def transcribe(
        self, audio: BinaryIO, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptPiece]:
        """Decode ``audio`` (an open file of any supported format) and transcribe it: pieces
        of text as they are decoded, then the transcript. Leaving early cancels it."""
        ...


async def final_transcript(pieces: AsyncIterator[TranscriptPiece]) -> Transcript:
    """The transcript that ends ``pieces`` (a ``Transcriber.transcribe``), which are closed
    once it has come."""
    async with aclosing(pieces):  # type: ignore[type-var]
        async for piece in pieces:
            if piece.result is not None:
                return piece.result
    raise AssertionError("a transcription ended without its transcript")
