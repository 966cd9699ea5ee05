"""Fake engines for fast tests: plugin tests check what their plugin asks of the engine
(system prompt, sampling, caps, model and capability), not what a model knows.

It is registered through the real hook (``FakeEngines``) and driven by the real memory
manager, policy and API, as simonw/llm's tests register a mock model. A token is one
character; the chat template is the messages as JSON; the answer is the next scripted reply
(``FakeLog.reply``) or else the last user message (the prompt, for completions), one token at
a time. The fake transcriber's transcript is the next scripted reply too; the fake speech
engine speaks a tone of 10 ms per character, a sentence at a time; the fake embedder's vector
is a text's letter counts, normalized (texts sharing letters are near). Every request is recorded
(``FakeLog.requests``), and ``FakeLog.hold`` keeps answers from finishing until released, for
tests of streaming, disconnects and busy models that must not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from mlx_host.embeddings import EmbeddingInput, Embeddings
from mlx_host.errors import GenerationError, InvalidRequestError
from mlx_host.generation import (
    Delta,
    OutputFormat,
    SamplingParams,
    TextRequest,
    TokenLogprob,
    ToolCallFormat,
)
from mlx_host.hookspecs import hookimpl
from mlx_host.json_grammar import compile_format
from mlx_host.models.engine import Engine, EngineType, PreparedModel
from mlx_host.models.spec import ModelSpec
from mlx_host.speech import Samples, SentenceSplitter, SpeechOptions, Voice
from mlx_host.stops import StopMatcher
from mlx_host.transcription import Segment, Transcript, TranscriptionOptions, TranscriptPiece

FAKE_ENGINE = "fake-llm"
FAKE_STT_ENGINE = "fake-stt"
FAKE_TTS_ENGINE = "fake-tts"
FAKE_EMBEDDING_ENGINE = "fake-embedding"
_DEFAULT_BYTES = 1_000_000


@dataclass(frozen=True)
class FakeCall:
    """One generation the fake engine was asked for."""

    model: str  # the name the service chose
    served_by: str  # the registry name of the loaded model answering
    service: str
    capability: str
    messages: list[dict[str, Any]] | None  # the rendered chat, system prompt included
    prompt: str  # the prompt's text (for chat, the messages as JSON)
    params: SamplingParams
    format: OutputFormat | None = None  # the form the answer was to be held to
    options: dict[str, Any] | None = None  # the chat template's options (enable_thinking)


@dataclass(frozen=True)
class _FakeAudioCall:
    served_by: str
    options: TranscriptionOptions | SpeechOptions

    @property
    def model(self) -> str:
        """The name the service chose."""
        return self.options.model

    @property
    def service(self) -> str:
        """The service that asked."""
        return self.options.service


@dataclass(frozen=True)
class FakeTranscription(_FakeAudioCall):
    """One transcription the fake speech-to-text engine was asked for."""

    options: TranscriptionOptions
    audio_bytes: int


@dataclass(frozen=True)
class FakeSpeech(_FakeAudioCall):
    """One text the fake text-to-speech engine was asked to speak."""

    options: SpeechOptions
    text: str
    spoken: list[str] = field(default_factory=list)  # the sentences spoken so far


@dataclass(frozen=True)
class FakeEmbedding:
    """One embeddings request the fake embedder was asked for."""

    served_by: str
    service: str
    inputs: list[EmbeddingInput]
    truncate: bool


class FakeLog:
    """What the fake engines of one server were asked, and what they will answer."""

    def __init__(self) -> None:
        self.requests: list[FakeCall | FakeTranscription | FakeSpeech | FakeEmbedding] = []
        self._replies: deque[str] = deque()
        self._open = threading.Event()
        self._open.set()
        self._hold_after = 1
        self._fail_after: int | None = None

    @property
    def last(self) -> Any:
        """The latest request (a ``FakeCall``, ``FakeTranscription``, ``FakeSpeech`` or
        ``FakeEmbedding``)."""
        return self.requests[-1]

    def reply(self, *texts: str) -> None:
        """Answer the next requests with ``texts``, in order."""
        self._replies.extend(texts)

    def fail(self, after: int) -> None:
        """The next text answer fails (``GenerationError``, as when the model fails on it)
        after its first ``after`` tokens."""
        self._fail_after = after

    def clear(self) -> None:
        """Forget requests, scripted replies and failures, and release any hold."""
        self.requests.clear()
        self._replies.clear()
        self._fail_after = None
        self._open.set()

    @contextmanager
    def hold(self, after: int = 1) -> Iterator[None]:
        """While inside, answers stop after their first ``after`` pieces (an LLM's tokens, a
        transcript's words, speech's sentences), so requests stay in flight."""
        self._hold_after = after
        self._open.clear()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Let held answers finish now, inside ``hold`` too."""
        self._open.set()

    def _next_reply(self, fallback: str) -> str:
        return self._replies.popleft() if self._replies else fallback

    async def _wait_if_held(self, produced: int) -> None:
        """Before the piece after ``produced`` ones."""
        if produced >= self._hold_after and not self._open.is_set():
            # Held by a test's thread, so a thread waits for it.
            await asyncio.to_thread(self._open.wait)


class FakeLLM(Engine):
    """The fake ``llm`` engine (see the module's docstring)."""

    kind = "llm"
    log: ClassVar[FakeLog]

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Any) -> PreparedModel:
        """Nothing to read: a name of its own, so that no two fake models share a load."""
        return PreparedModel(Path(f"fake-model-{spec.name}"), "fake")

    @classmethod
    def estimate_bytes(cls, prepared: PreparedModel) -> int:
        """Unknown before loading: the spec's ``memory_bytes`` is used when set."""
        return _DEFAULT_BYTES

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.context_length: int | None = self.spec.context_length or 1_000_000
        self._active = 0

    async def start(self) -> None:
        """Nothing to load."""

    @property
    def memory_bytes(self) -> int:
        """The spec's ``memory_bytes``, so that tests can budget fake models."""
        return self.spec.memory_bytes or _DEFAULT_BYTES

    @property
    def busy(self) -> bool:
        """Requests are being answered."""
        return self._active > 0

    async def close(self, wait_seconds: float) -> None:
        """Nothing to free."""

    def describe(self) -> dict[str, Any]:
        """Requests in flight."""
        return {"running_requests": self._active, "queued_requests": 0}

    #: Thinks in Qwen3's tags when a scripted reply does; takes Qwen3's switch.
    reasoning_tags = ("<think>", "</think>")
    template_options = frozenset({"enable_thinking"})

    @property
    def tool_format(self) -> ToolCallFormat:
        """Calls tools as Hermes and Qwen do (``<tool_call>`` JSON), or as Mistral does
        (``[TOOL_CALLS]``) when its name says mistral: mlx-lm's own parsers read them."""
        from mlx_host.engine.tool_formats import named  # mlx-lm's parsers

        return named("mistral" if "mistral" in self.spec.name else "json_tools")

    def chat_prompt(
        self, messages: list[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> list[int]:
        """The messages as JSON, a token per character (with the options, when given, as
        ``{"messages": ..., "options": ...}``)."""
        if options:
            return self.encode(json.dumps({"messages": messages, "options": options}))
        return self.encode(json.dumps(messages))

    def decode(self, tokens: list[int]) -> str:
        """A character per token."""
        return "".join(map(chr, tokens))

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int] | None:
        """StarCoder's format, in plain characters."""
        return self.encode(f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>")

    def encode(self, text: str) -> list[int]:
        """A token per character."""
        return [ord(c) for c in text]

    async def generate(self, request: TextRequest) -> AsyncIterator[Delta]:
        """The scripted reply (or the echo), a character per token, with ``max_tokens`` and
        stop strings applied as a real engine applies them."""
        if request.format is not None:  # the same 400s as the real engine, before any text
            compile_format(request.format)
        prompt = "".join(map(chr, request.prompt))
        messages = None
        options = None
        if request.capability == "chat":
            with contextlib.suppress(ValueError):  # a prompt not made by chat_prompt
                messages = json.loads(prompt)
            if isinstance(messages, dict):
                messages, options = messages["messages"], messages["options"]
        self.log.requests.append(
            FakeCall(request.model, self.spec.name, request.service, request.capability,
                     messages, prompt, request.params, request.format, options)
        )  # fmt: skip
        users = [m["content"] for m in messages or () if m["role"] == "user"]
        reply = self.log._next_reply(users[-1] if users else prompt)
        fail_after, self.log._fail_after = self.log._fail_after, None
        params, stops = request.params, StopMatcher(list(request.params.stop))

        pending: list[TokenLogprob] = []  # one per character, certain: log probability 0

        def delta(text: str, produced: int, finish: str | None = None) -> Delta:
            logprobs = tuple(pending)
            pending.clear()
            return Delta(
                text, finish, len(request.prompt), produced, logprobs=logprobs,
                stop_sequence=stops.matched if finish else None,
            )  # fmt: skip

        self._active += 1
        try:
            produced, finish = 0, "stop"
            for char in reply:
                if produced == params.max_tokens:
                    finish = "length"
                    break
                await self.log._wait_if_held(produced)
                if produced == fail_after:
                    raise GenerationError()
                produced += 1
                if params.logprobs is not None:
                    pending.append(
                        TokenLogprob(char, 0.0, ((char, 0.0),) * min(params.logprobs, 1))
                    )
                text, stopped = stops.feed(char)
                if stopped:
                    yield delta(text, produced, "stop")
                    return
                if text:
                    yield delta(text, produced)
                await asyncio.sleep(0)
            yield delta(stops.flush(), produced, finish)
        finally:
            self._active -= 1


class FakeSTT(FakeLLM):
    """The fake ``stt`` engine: English and a few other languages."""

    kind = "stt"
    multilingual = True
    languages = frozenset({"en", "fr", "de", "es"})

    async def transcribe(
        self, audio: BinaryIO, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptPiece]:
        """The scripted reply (or a line about the audio), word by word when streamed."""
        size = len(audio.read())
        self.log.requests.append(FakeTranscription(self.spec.name, options, size))
        text = self.log._next_reply(f"Fake transcript of {size} bytes.")
        self._active += 1
        try:
            if options.stream:
                for i, word in enumerate(text.split(" ")):
                    await self.log._wait_if_held(i)
                    yield TranscriptPiece(delta=word if i == 0 else " " + word)
            segment = Segment(0, 0, 0.0, 1.0, " " + text, [], 0.0, 0.0, 1.0, 0.0)
            yield TranscriptPiece(result=Transcript(text, "english", 1.0, [segment], len(text)))
        finally:
            self._active -= 1


class FakeTTS(FakeLLM):
    """The fake ``tts`` engine: a tone per sentence, 10 ms per character, at 24 kHz."""

    kind = "tts"
    sample_rate = 24_000
    speed_range = (0.25, 4.0)
    follows_instructions = True

    def voices(self) -> list[Voice]:
        """Two voices; the first also answers to Kokoro's name."""
        return [
            Voice("fake", "en-US", "female", aliases=("af_heart",)),
            Voice("faux", "fr-FR", "male"),
        ]

    async def synthesize(self, text: str, options: SpeechOptions) -> AsyncIterator[Samples]:
        """A tone per sentence (``SentenceSplitter``'s), each once the hold lets it through."""
        call = FakeSpeech(self.spec.name, options, text)
        self.log.requests.append(call)
        splitter = SentenceSplitter()
        self._active += 1
        try:
            for i, sentence in enumerate([*splitter.feed(text), *splitter.flush()]):
                await self.log._wait_if_held(i)
                call.spoken.append(sentence)
                n = int(len(sentence) * self.sample_rate / 100 / options.speed)
                yield (0.1 * np.sin(np.arange(n, dtype=np.float32) * 0.1)).astype(np.float32)
                await asyncio.sleep(0)
        finally:
            self._active -= 1


class FakeEmbedder(FakeLLM):
    """The fake ``embedding`` engine: 32 dimensions (counts of a to z, digits, spaces and the
    rest, normalized), truncatable; a token is a character, 64 at most per input."""

    kind = "embedding"
    dimensions = 32
    max_input_tokens = 64
    vocab_size = 0x110000  # every code point
    truncatable = True

    async def embed(
        self, inputs: list[EmbeddingInput], service: str, truncate: bool = True
    ) -> Embeddings:
        """Each input's letter counts, once the hold lets them through."""
        self.log.requests.append(FakeEmbedding(self.spec.name, service, list(inputs), truncate))
        for i, x in enumerate(inputs):
            if not isinstance(x, str) and any(not 0 <= t < self.vocab_size for t in x):
                raise InvalidRequestError(f"input[{i}] has a token id outside the vocabulary",
                                          param="input")  # fmt: skip
        texts = [x if isinstance(x, str) else "".join(map(chr, x)) for x in inputs]
        for i, text in enumerate(texts):
            if len(text) > self.max_input_tokens and not truncate:
                raise InvalidRequestError(f"input[{i}] is too long", param="input")
        texts = [t[: self.max_input_tokens] for t in texts]
        self._active += 1
        try:
            await self.log._wait_if_held(0)
            vectors = np.zeros((len(texts), self.dimensions), np.float32)
            for row, text in enumerate(texts):
                for char in text.lower():
                    vectors[row, _fake_dimension(char)] += 1
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return Embeddings(vectors, sum(map(len, texts)))
        finally:
            self._active -= 1


def _fake_dimension(char: str) -> int:
    if "a" <= char <= "z":
        return ord(char) - ord("a")
    return 26 if char.isdigit() else 27 if char.isspace() else 28


class FakeEngines:
    """A plugin registering the fake engines, which record into ``log``."""

    def __init__(self, log: FakeLog) -> None:
        self.log = log

    @hookimpl
    def mlx_host_register_engines(self, register: Callable[[EngineType], None]) -> None:
        """The fake ``llm``, ``stt``, ``tts`` and ``embedding`` engines, bound to this
        plugin's log."""
        llm = type("FakeLLM", (FakeLLM,), {"log": self.log})
        register(EngineType(name=FAKE_ENGINE, kind="llm", engine=llm))
        stt = type("FakeSTT", (FakeSTT,), {"log": self.log})
        register(EngineType(name=FAKE_STT_ENGINE, kind="stt", engine=stt))
        tts = type("FakeTTS", (FakeTTS,), {"log": self.log})
        register(EngineType(name=FAKE_TTS_ENGINE, kind="tts", engine=tts))
        embedder = type("FakeEmbedder", (FakeEmbedder,), {"log": self.log})
        register(EngineType(name=FAKE_EMBEDDING_ENGINE, kind="embedding", engine=embedder))
