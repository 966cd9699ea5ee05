"""``POST /audio/transcriptions`` and ``/audio/translations``: speech to text, OpenAI-compatible.

Multipart uploads of any common audio format (``mlx_host.audio``); every OpenAI response
format; with ``stream=true``, OpenAI's transcription events as the text is decoded.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from mlx_host import audio
from mlx_host.api.access import record_of
from mlx_host.api.answers import StreamedResponse, until_done
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.api.transcripts import ResponseFormat, events, whole
from mlx_host.errors import InvalidRequestError
from mlx_host.host import Host
from mlx_host.transcription import (
    Task,
    Transcriber,
    TranscriptionOptions,
    final_transcript,
)

router = APIRouter(tags=["audio"], responses=error_responses(400, 401, 403, 404, 413, 429, 503))

Granularity = Literal["word", "segment"]
#: OpenAI fields this server does not implement, and why they are refused rather than ignored.
_REFUSED = {
    "chunking_strategy": "audio is always read in 30-second windows",
    "include[]": "token log probabilities of transcriptions are not returned",
    "known_speaker_names[]": "speakers are not told apart",
    "known_speaker_references[]": "speakers are not told apart",
}
_TRANSCRIPTION_FIELDS = {
    "file", "model", "language", "prompt", "response_format", "temperature",
    "timestamp_granularities[]", "stream",
}  # fmt: skip
_TRANSLATION_FIELDS = {"file", "model", "prompt", "response_format", "temperature"}

AudioFile = Annotated[UploadFile, File(description="The audio: wav, flac, mp3, ogg, m4a, webm.")]
ModelField = Annotated[str, Form(description='A speech-to-text model, or "default".')]
PromptField = Annotated[str | None, Form(description="Text that came before, or words to expect.")]
FormatField = Annotated[ResponseFormat, Form()]
TemperatureField = Annotated[float, Form(ge=0, le=1, allow_inf_nan=False)]


async def _check_fields(request: Request, known: set[str]) -> None:
    """400 for a field this endpoint does not implement, naming it (never ignored)."""
    form = await request.form()
    for name in sorted(set(form.keys()) - known):
        why = _REFUSED.get(name, "it is not a field of this endpoint")
        raise InvalidRequestError(
            f"{name} is not supported: {why}", param=name, code="unsupported_parameter"
        )


#: A transcript's media types: by response_format (json and verbose_json, text and srt, vtt),
#: or server-sent events when streamed.
TRANSCRIPT_TYPES: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in
                      ("application/json", "text/plain", "text/vtt", "text/event-stream")}}
}  # fmt: skip


async def _transcribe(
    request: Request,
    host: Host,
    caller: Caller,
    file: UploadFile,
    requested_model: str,
    options: TranscriptionOptions,
    response_format: ResponseFormat,
    granularities: set[str],
) -> Response:
    """What both endpoints do once their fields are read."""
    if granularities and response_format != "verbose_json":
        raise InvalidRequestError(
            "timestamp_granularities[] needs response_format verbose_json",
            param="timestamp_granularities[]",
        )
    if options.stream and response_format not in ("json", "text"):
        raise InvalidRequestError(
            f"stream=true sends text events: use response_format json or text, not "
            f"{response_format}",
            param="stream",
        )
    name, model, engine = await host.engine_for(
        caller.spec, "transcription", Transcriber, requested_model
    )
    options = replace(options, model=name)
    record_of(request).model = name
    if options.language is not None and options.language not in engine.languages:
        only = "" if engine.multilingual else f"; {model.name!r} knows only English"
        raise InvalidRequestError(
            f"language {options.language!r} is not an ISO-639-1 code this model knows{only}",
            param="language",
            code="unsupported_language",
        )
    await asyncio.to_thread(audio.probe, file.file, host.settings.max_audio_seconds)
    pieces = engine.transcribe(file.file, options)
    if options.stream:
        first = await until_done(anext(pieces), request)
        return StreamedResponse(events(first, pieces), close=pieces.aclose)  # type: ignore[attr-defined]
    transcript = await until_done(final_transcript(pieces), request)
    return whole(transcript, response_format, options.task, granularities)


@router.post("/audio/transcriptions", response_model=None, responses=TRANSCRIPT_TYPES)
async def create_transcription(
    request: Request,
    caller: Caller,
    host: HostDep,
    file: AudioFile,
    model: ModelField = "default",
    language: Annotated[str | None, Form(description="ISO-639-1, e.g. en.")] = None,
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = 0.0,
    timestamp_granularities: Annotated[
        list[Granularity], Form(alias="timestamp_granularities[]")
    ] = [],  # noqa: B006 (FastAPI copies form defaults)
    stream: Annotated[bool, Form()] = False,
) -> Response:
    """Transcribe audio in its own language (OpenAI-compatible).

    ``response_format``: json, text, srt, vtt, or verbose_json (with ``segments``, and
    ``words`` when ``timestamp_granularities[]`` includes word). With ``stream=true``, server-
    sent ``transcript.text.delta`` events as the text is decoded, then ``transcript.text.done``.
    """
    await _check_fields(request, _TRANSCRIPTION_FIELDS)
    granularities: set[str] = set(timestamp_granularities)
    options = TranscriptionOptions(
        service=caller.spec.name, model=model, task="transcribe",
        language=language.lower() if language else None, prompt=prompt,
        temperature=temperature, word_timestamps="word" in granularities, stream=stream,
    )  # fmt: skip
    return await _transcribe(
        request, host, caller, file, model, options, response_format, granularities
    )


@router.post("/audio/translations", response_model=None, responses=TRANSCRIPT_TYPES)
async def create_translation(
    request: Request,
    caller: Caller,
    host: HostDep,
    file: AudioFile,
    model: ModelField = "default",
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = 0.0,
) -> Response:
    """Transcribe audio into English (OpenAI-compatible). A model that knows only English
    transcribes English speech."""
    await _check_fields(request, _TRANSLATION_FIELDS)
    task: Task = "translate"
    options = TranscriptionOptions(
        service=caller.spec.name, model=model, task=task, prompt=prompt, temperature=temperature
    )
    return await _transcribe(request, host, caller, file, model, options, response_format, set())
