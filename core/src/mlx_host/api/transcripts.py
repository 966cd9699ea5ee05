"""A transcript in each of OpenAI's response formats, whole or as server-sent events."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from mlx_host.api.answers import sse_event
from mlx_host.errors import MLXHostError
from mlx_host.transcription import Segment, Task, Transcript, TranscriptPiece

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
#: Encoder positions per second of audio: what counts as input tokens in streamed usage.
AUDIO_TOKENS_PER_SECOND = 50


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: list[Segment]) -> str:
    """SubRip subtitles: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: list[Segment]) -> str:
    """WebVTT subtitles."""
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def _duration_usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def verbose(transcript: Transcript, task: Task, granularities: set[str]) -> dict[str, Any]:
    """``verbose_json``: language, duration, segments (unless only words were asked for) and
    words (when asked for)."""
    body: dict[str, Any] = {
        "task": task,
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
                "tokens": s.tokens, "temperature": s.temperature,
                "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]  # fmt: skip
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in transcript.segments
            for w in s.words
        ]
    body["usage"] = _duration_usage(transcript)
    return body


def whole(
    transcript: Transcript, fmt: ResponseFormat, task: Task, granularities: set[str]
) -> Response:
    """The response for a transcript in ``fmt``."""
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(srt(transcript.segments))
    if fmt == "vtt":
        return PlainTextResponse(vtt(transcript.segments), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(verbose(transcript, task, granularities))
    return JSONResponse({"text": transcript.text, "usage": _duration_usage(transcript)})


async def events(
    first: TranscriptPiece, rest: AsyncIterator[TranscriptPiece]
) -> AsyncIterator[str]:
    """OpenAI's transcription stream: ``transcript.text.delta`` events as text is decoded,
    then ``transcript.text.done`` with the whole text and token usage."""
    piece: TranscriptPiece | None = first
    try:
        while piece is not None:
            if piece.delta:
                yield sse_event({"type": "transcript.text.delta", "delta": piece.delta})
            if (transcript := piece.result) is not None:
                audio_tokens = round(transcript.duration * AUDIO_TOKENS_PER_SECOND)
                usage = {
                    "type": "tokens",
                    "input_tokens": audio_tokens,
                    "output_tokens": transcript.output_tokens,
                    "total_tokens": audio_tokens + transcript.output_tokens,
                    "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
                }
                yield sse_event({"type": "transcript.text.done", "text": transcript.text,
                              "usage": usage})  # fmt: skip
                return
            piece = await anext(rest, None)
    except MLXHostError as exc:
        yield sse_event(exc.body())
