"""The voice turn: a spoken question in, a spoken answer out, as one stream.

``POST /api/v1/lbrxvoice/turn`` (multipart: ``file``, and optionally ``session_id``, ``voice``,
``response_format``, ``speed``) transcribes the question, answers it with the service's voice
policy on the chat model's shared batch, and speaks the answer sentence by sentence while the
model is still writing it. The response is server-sent events:

- ``turn.transcript``: ``text``, ``language``, ``duration`` (seconds) of the question;
- ``turn.text.delta``: ``delta``, the answer's text as it is generated;
- ``turn.audio.delta``: ``audio``, base64 bytes of the spoken answer in ``response_format``
  (default ``pcm``: 16-bit little-endian mono; the ``X-Audio-Format`` and
  ``X-Audio-Sample-Rate`` headers say which), the chunks of one stream in order;
- ``turn.done``: ``text`` (the whole answer), ``transcript``, ``finish_reason``, ``usage``,
  ``session`` (with a session), and ``timings``: seconds from the request's arrival (its
  upload read) to the transcript, the first text, the first audio, and the end;
- an ``error`` object, OpenAI-shaped, if the turn fails after the stream began.

Anything wrong with the request (bad audio, a question over ``MAX_TURN_SECONDS``, silence, an
unknown voice or format, a session of another service) is an HTTP error before the stream.
With a session, the question and the answer are saved like a chat turn once the answer has
been spoken (nothing is saved when the turn fails or the client leaves). The turn's three
models are held loaded until it ends, so that none is evicted to make room for another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from mlx_host import (
    Caller,
    ChatCompletionRequest,
    ChatMessage,
    ChatTurn,
    Delta,
    GenerationError,
    HostDep,
    InvalidRequestError,
    MLXHostError,
    SentenceSplitter,
    SpeechOptions,
    StreamedResponse,
    Synthesizer,
    Transcriber,
    Transcript,
    TranscriptionOptions,
    audio_encoding,
    check_speed,
    choose_voice,
    final_transcript,
    speakable,
    sse_event,
    until_done,
)
from mlx_host import audio as audio_in
from mlx_host.audio_encoding import Encoder, SpeechFormat

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/lbrxvoice", tags=["lbrxvoice"])

#: The longest question a turn takes, in seconds of audio.
MAX_TURN_SECONDS = 60.0


@router.post(
    "/turn",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def voice_turn(
    request: Request,
    caller: Caller,
    host: HostDep,
    file: Annotated[UploadFile, File(description="The spoken question: wav, mp3, ogg, ...")],
    session_id: Annotated[str | None, Form(description="Continue this session.")] = None,
    voice: Annotated[str | None, Form(description="Default: the service's voice.")] = None,
    response_format: Annotated[SpeechFormat, Form()] = "pcm",
    speed: Annotated[float, Form(ge=0.25, le=4.0, allow_inf_nan=False)] = 1.0,
) -> StreamingResponse:
    """Answer a spoken question out loud, streamed (see the module's description)."""
    arrived = time.perf_counter()
    service = caller.spec
    if session_id is not None:  # 404 before any work for a session that is not the caller's
        await host.sessions.get(service.name, session_id)
    await asyncio.to_thread(
        audio_in.probe, file.file, MAX_TURN_SECONDS, limit="a voice turn's limit", measure=True
    )
    holds = contextlib.ExitStack()
    try:
        stt_name, stt_model, stt = await host.engine_for(service, "transcription", Transcriber)
        holds.enter_context(stt_model.held())
        tts_name, tts_model, tts = await host.engine_for(service, "speech", Synthesizer)
        holds.enter_context(tts_model.held())
        chosen = choose_voice(tts.voices(), voice, service.policy.voice)
        check_speed(tts, speed, tts_model.name)
        encoder = audio_encoding.encoder(response_format, tts.sample_rate)
        options = TranscriptionOptions(service=service.name, model=stt_name)
        transcript = await until_done(final_transcript(stt.transcribe(file.file, options)), request)
        transcribed = time.perf_counter() - arrived
        question = transcript.text.strip()
        if not question:
            raise InvalidRequestError(
                "No speech was heard in the audio", param="file", code="no_speech"
            )
        body = ChatCompletionRequest(
            messages=[ChatMessage(role="user", content=question)], session_id=session_id
        )
        turn = await ChatTurn.prepare(host, service, body)
        holds.enter_context(turn.model.held())
        deltas = turn.generate()
        first = await until_done(anext(deltas), request)
    except BaseException:
        holds.close()
        raise
    speech = SpeechOptions(service.name, tts_name, chosen.name, speed)
    answer = SpokenAnswer(turn, deltas, tts, speech, encoder, arrived, holds)
    answer.timings["transcript"] = round(transcribed, 4)
    return StreamedResponse(
        answer.events(transcript, first),
        close=answer.close,
        headers={"X-Audio-Format": response_format, "X-Audio-Sample-Rate": str(tts.sample_rate)},
    )


_END = object()  # a task of the answer is done


@dataclass
class SpokenAnswer:
    """One answer, written by the chat model and spoken sentence by sentence as it is
    written: a writer task reads the text, a speaker task synthesizes each finished sentence,
    and both put their events on one queue, in the order they happen."""

    turn: ChatTurn
    deltas: AsyncIterator[Delta]
    tts: Synthesizer
    options: SpeechOptions
    encoder: Encoder
    arrived: float
    holds: contextlib.ExitStack
    timings: dict[str, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def _mark(self, name: str) -> None:
        self.timings.setdefault(name, round(time.perf_counter() - self.arrived, 4))

    async def events(self, transcript: Transcript, first: Delta) -> AsyncIterator[str]:
        """The turn's events (see the module's description)."""
        yield sse_event({
            "type": "turn.transcript", "text": transcript.text.strip(),
            "language": transcript.language, "duration": round(transcript.duration, 3),
        })  # fmt: skip
        out: asyncio.Queue[Any] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write(first, out, sentences))
        self._tasks += [writer, asyncio.create_task(self._speak(sentences, out))]
        try:
            running = 2
            while running:
                item = await out.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, MLXHostError):
                    raise item
                else:
                    yield item
            reply, last = writer.result()
            saved = await self.turn.finish(reply)
            self._mark("done")
            yield sse_event({
                "type": "turn.done", "text": reply, "transcript": transcript.text.strip(),
                "finish_reason": last.finish_reason,
                "usage": {"prompt_tokens": last.prompt_tokens,
                          "completion_tokens": last.completion_tokens},
                "timings": self.timings, **saved,
            })  # fmt: skip
        except MLXHostError as exc:
            yield sse_event(exc.body())
        finally:  # before the response ends; StreamedResponse calls it again if need be
            await self.close()

    async def close(self) -> None:
        """Stop writing and speaking, free the batch slot and the models (idempotent)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deltas.aclose()  # type: ignore[attr-defined]
        self.holds.close()

    async def _write(
        self, first: Delta, out: asyncio.Queue[Any], sentences: asyncio.Queue[str | None]
    ) -> tuple[str, Delta]:
        """Pass the text on as it comes, and each sentence as soon as it is complete."""
        splitter, text, last = SentenceSplitter(), [], first
        try:
            delta: Delta | None = first
            while delta is not None:
                last = delta
                if delta.text:
                    self._mark("first_text")
                    text.append(delta.text)
                    out.put_nowait(sse_event({"type": "turn.text.delta", "delta": delta.text}))
                    for sentence in splitter.feed(delta.text):
                        sentences.put_nowait(sentence)
                if delta.finish_reason:
                    break
                delta = await anext(self.deltas, None)
            for sentence in splitter.flush():
                sentences.put_nowait(sentence)
        except Exception as exc:
            out.put_nowait(_as_error(exc, "writing"))
        finally:
            sentences.put_nowait(None)
            out.put_nowait(_END)
        return "".join(text), last

    async def _speak(self, sentences: asyncio.Queue[str | None], out: asyncio.Queue[Any]) -> None:
        """Speak each sentence as it arrives, in order."""
        try:
            while (sentence := await sentences.get()) is not None:
                if not (words := speakable(sentence).strip()):
                    continue
                async for samples in self.tts.synthesize(words, self.options):
                    self._send(await asyncio.to_thread(self.encoder.encode, samples), out)
            self._send(await asyncio.to_thread(self.encoder.finish), out)
        except Exception as exc:
            out.put_nowait(_as_error(exc, "speaking"))
        finally:
            out.put_nowait(_END)

    def _send(self, data: bytes, out: asyncio.Queue[Any]) -> None:
        if data:
            self._mark("first_audio")
            audio = base64.b64encode(data).decode()
            out.put_nowait(sse_event({"type": "turn.audio.delta", "audio": audio}))


def _as_error(exc: Exception, doing: str) -> MLXHostError:
    """What the client is told of a failure in the middle of the turn."""
    if isinstance(exc, MLXHostError):
        return exc
    logger.error("a voice turn failed while %s", doing, exc_info=exc)
    return GenerationError(f"The turn failed while {doing} the answer; retry the request")
