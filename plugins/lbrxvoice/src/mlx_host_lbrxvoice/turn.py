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
been spoken (nothing is saved when the turn fails or the client leaves).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from mlx_host import (
    Caller,
    ChatCompletionRequest,
    ChatMessage,
    ChatTurn,
    Delta,
    HostDep,
    InvalidRequestError,
    MLXHostError,
    SentenceSplitter,
    SpeechOptions,
    Synthesizer,
    Transcriber,
    Transcript,
    TranscriptionOptions,
    audio_encoding,
    check_speed,
    choose_voice,
    speakable,
    until_done,
)
from mlx_host import audio as audio_in
from mlx_host.audio_encoding import Encoder, SpeechFormat

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
    await asyncio.to_thread(audio_in.probe, file.file, MAX_TURN_SECONDS)
    stt_name, _, stt = await host.engine_for(service, "transcription", Transcriber)
    tts_name, tts_model, tts = await host.engine_for(service, "speech", Synthesizer)
    chosen = choose_voice(tts.voices(), voice, service.policy.voice)
    check_speed(tts, speed, tts_model.name)
    encoder = audio_encoding.encoder(response_format, tts.sample_rate)
    options = TranscriptionOptions(service=service.name, model=stt_name)
    transcript = await until_done(_transcribe(stt, file, options), request)
    question = transcript.text.strip()
    if not question:
        raise InvalidRequestError(
            "No speech was heard in the audio", param="file", code="no_speech"
        )
    body = ChatCompletionRequest(
        messages=[ChatMessage(role="user", content=question)], session_id=session_id
    )
    turn = await ChatTurn.prepare(host, service, body)
    deltas = turn.generate()
    first = await until_done(anext(deltas), request)
    spoken = SpokenAnswer(
        turn, tts, SpeechOptions(service.name, tts_name, chosen.name, speed), encoder, arrived
    )
    spoken.timings["transcript"] = time.perf_counter() - arrived
    return StreamingResponse(
        spoken.events(transcript, first, deltas),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Audio-Format": response_format,
            "X-Audio-Sample-Rate": str(tts.sample_rate),
        },
        background=BackgroundTask(deltas.aclose),  # type: ignore[attr-defined]
    )


async def _transcribe(
    stt: Transcriber, file: UploadFile, options: TranscriptionOptions
) -> Transcript:
    async for piece in stt.transcribe(file.file, options):
        if piece.result is not None:
            return piece.result
    raise AssertionError("a transcription ended without its transcript")


def _event(kind: str, **fields: Any) -> str:
    return f"data: {json.dumps({'type': kind, **fields}, ensure_ascii=False)}\n\n"


_END = object()  # a task of the answer is done


@dataclass
class SpokenAnswer:
    """One answer, written by the chat model and spoken sentence by sentence as it is
    written: a writer task reads the text, a speaker task synthesizes each finished sentence,
    and both put their events on one queue, in the order they happen."""

    turn: ChatTurn
    tts: Synthesizer
    options: SpeechOptions
    encoder: Encoder
    arrived: float
    timings: dict[str, float] = field(default_factory=dict)

    def _mark(self, name: str) -> None:
        self.timings.setdefault(name, round(time.perf_counter() - self.arrived, 4))

    async def events(
        self, transcript: Transcript, first: Delta, rest: AsyncIterator[Delta]
    ) -> AsyncIterator[str]:
        """The turn's events (see the module's description)."""
        yield _event(
            "turn.transcript", text=transcript.text.strip(), language=transcript.language,
            duration=round(transcript.duration, 3),
        )  # fmt: skip
        out: asyncio.Queue[Any] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write(first, rest, out, sentences))
        speaker = asyncio.create_task(self._speak(sentences, out))
        try:
            running = 2
            while running:
                item = await out.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
            reply, last = writer.result()
            saved = await self.turn.finish(reply)
            self._mark("done")
            yield _event(
                "turn.done", text=reply, transcript=transcript.text.strip(),
                finish_reason=last.finish_reason,
                usage={"prompt_tokens": last.prompt_tokens,
                       "completion_tokens": last.completion_tokens},
                timings=self.timings, **saved,
            )  # fmt: skip
        except MLXHostError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            writer.cancel()
            speaker.cancel()

    async def _write(
        self,
        first: Delta,
        rest: AsyncIterator[Delta],
        out: asyncio.Queue[Any],
        sentences: asyncio.Queue[str | None],
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
                    out.put_nowait(_event("turn.text.delta", delta=delta.text))
                    for sentence in splitter.feed(delta.text):
                        sentences.put_nowait(sentence)
                if delta.finish_reason:
                    break
                delta = await anext(rest, None)
            for sentence in splitter.flush():
                sentences.put_nowait(sentence)
        except MLXHostError as exc:
            out.put_nowait(exc)
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
        except MLXHostError as exc:
            out.put_nowait(exc)
        finally:
            out.put_nowait(_END)

    def _send(self, data: bytes, out: asyncio.Queue[Any]) -> None:
        if data:
            self._mark("first_audio")
            out.put_nowait(_event("turn.audio.delta", audio=base64.b64encode(data).decode()))
