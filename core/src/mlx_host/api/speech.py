"""``POST /audio/speech``: text to speech, OpenAI-compatible, streamed as it is synthesized;
``GET /audio/voices``: the voices a service's speech model speaks in.

The body is always streamed: each sentence's audio leaves as soon as it is synthesized, as
raw audio in ``response_format`` (``stream_format=audio``) or as OpenAI's server-sent events
(``stream_format=sse``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mlx_host import audio_encoding
from mlx_host.api.access import record_of
from mlx_host.api.answers import StreamedResponse, sse_event, until_done
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.transcripts import AUDIO_TOKENS_PER_SECOND
from mlx_host.audio_encoding import Encoder, SpeechFormat
from mlx_host.errors import InvalidRequestError, MLXHostError
from mlx_host.speech import (
    Samples,
    SpeechOptions,
    Synthesizer,
    Voice,
    check_speed,
    choose_voice,
)

logger = logging.getLogger(__name__)
router = APIRouter(tags=["audio"], responses=error_responses(400, 401, 403, 404, 429, 503))

#: The longest input OpenAI takes, and so this server.
MAX_INPUT_CHARS = 4096


class SpeechRequest(BaseModel):
    """Body of ``POST /audio/speech``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description='A text-to-speech model, or "default".')
    input: str = Field(max_length=MAX_INPUT_CHARS, description="The text to speak.")
    voice: str | None = Field(
        None, description="A voice of GET /audio/voices; default: the service's, or the first."
    )
    instructions: str | None = Field(
        None,
        max_length=MAX_INPUT_CHARS,
        description="How to speak, in words; used by models that can (X-Ignored-Fields says "
        "when it was not).",
    )
    response_format: SpeechFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="audio: the encoded audio as it is synthesized; sse: speech.audio.delta "
        "events (base64 chunks of it), then speech.audio.done.",
    )


async def encoded(chunks: AsyncIterator[Samples], encoder: Encoder) -> AsyncIterator[bytes]:
    """The audio as bytes of ``encoder``'s format, as each chunk is synthesized (encoded in a
    worker thread: compressed formats take milliseconds a chunk)."""
    async for samples in chunks:
        if data := await asyncio.to_thread(encoder.encode, samples):
            yield data
    if data := await asyncio.to_thread(encoder.finish):
        yield data


@router.post(
    "/audio/speech",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in audio_encoding.MEDIA_TYPES.values()}}},
)
async def create_speech(
    body: SpeechRequest, caller: Caller, host: HostDep, request: Request
) -> StreamingResponse:
    """Speak ``input`` (OpenAI-compatible), sentence by sentence as it is synthesized.

    ``response_format``: mp3 (default), opus, aac, flac, wav or pcm (16-bit little-endian
    mono at the model's rate, 24 kHz for the built-in models); a format this machine cannot
    encode gets 400 naming those it can. A streamed WAV's header gives its length as unknown.
    """
    text = body.input.strip()
    if not text:
        raise InvalidRequestError("input is empty", param="input", code="empty_input")
    name, model, engine = await host.engine_for(caller.spec, "speech", Synthesizer, body.model)
    record_of(request).model = name
    voice = choose_voice(engine.voices(), body.voice, caller.spec.policy.voice)
    check_speed(engine, body.speed, model.name)
    encoder = audio_encoding.encoder(body.response_format, engine.sample_rate)
    options = SpeechOptions(
        caller.spec.name, name, voice.name, body.speed, instructions=body.instructions
    )
    chunks = engine.synthesize(text, options)
    first = await until_done(anext(chunks, None), request)
    if first is None:
        raise InvalidRequestError(
            "input has nothing to speak (no words)", param="input", code="empty_input"
        )
    audio = encoded(_prepend(first, chunks), encoder)
    headers = {}
    # OpenAI's SDKs and apps send instructions as a matter of course (gpt-4o-mini-tts takes
    # them), so a model that cannot follow them still speaks, and the response says so.
    if body.instructions and not engine.follows_instructions:
        headers["X-Ignored-Fields"] = "instructions"
    close = chunks.aclose  # type: ignore[attr-defined]
    if body.stream_format == "sse":
        events = _events(audio, len(text), engine.sample_rate, encoder)
        return StreamedResponse(events, close=close, headers=headers)
    return StreamedResponse(
        _logged(audio, name), close=close, media_type=encoder.media_type, headers=headers
    )


async def _prepend(first: Samples, rest: AsyncIterator[Samples]) -> AsyncIterator[Samples]:
    yield first
    async for samples in rest:
        yield samples


async def _logged(audio: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    """The audio; a failure after it started can only cut it short (the status is sent)."""
    try:
        async for data in audio:
            yield data
    except MLXHostError as exc:
        logger.warning("speech from %s stopped early: %s", model, exc.message)


async def _events(
    audio: AsyncIterator[bytes], input_chars: int, sample_rate: int, encoder: Encoder
) -> AsyncIterator[str]:
    """OpenAI's speech events: ``speech.audio.delta`` with each base64 chunk, then
    ``speech.audio.done`` with usage (input tokens are the input's characters; output tokens
    are 20 ms of audio each)."""
    samples = 0
    try:
        async for data in audio:
            audio_b64 = base64.b64encode(data).decode()
            yield sse_event({"type": "speech.audio.delta", "audio": audio_b64})
        samples = encoder.samples_encoded
    except MLXHostError as exc:
        yield sse_event(exc.body())
        return
    output = math.ceil(samples / sample_rate * AUDIO_TOKENS_PER_SECOND)
    usage = {"input_tokens": input_chars, "output_tokens": output,
             "total_tokens": input_chars + output}  # fmt: skip
    yield sse_event({"type": "speech.audio.done", "usage": usage})


@router.get("/audio/voices")
async def list_voices(
    caller: Caller,
    host: HostDep,
    model: Annotated[str | None, Query(description="Default: the service's speech model.")] = None,
) -> dict[str, Any]:
    """The voices the caller's speech model speaks in on this server (loading it if needed),
    the service's default first."""
    name, loaded, engine = await host.engine_for(caller.spec, "speech", Synthesizer, model)
    default = choose_voice(engine.voices(), None, caller.spec.policy.voice)
    voices = sorted(engine.voices(), key=lambda v: v.name != default.name)
    return {
        "object": "list",
        "model": name,
        "served_by": loaded.name,
        "data": [_voice(v, v.name == default.name) for v in voices],
    }


def _voice(voice: Voice, default: bool) -> dict[str, Any]:
    return {
        "id": voice.name, "object": "voice", "language": voice.language,
        "gender": voice.gender, "aliases": list(voice.aliases),
        "description": voice.description, "default": default,
    }  # fmt: skip
