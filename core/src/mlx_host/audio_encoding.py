"""Audio out: synthesized speech (mono float32) in each of OpenAI's speech formats, encoded a
chunk at a time so that every chunk can leave as soon as it is synthesized.

``pcm`` and ``wav`` need nothing; ``mp3``, ``opus`` (in Ogg), ``aac`` (ADTS) and ``flac`` use the
encoders in PyAV's wheel, where they are there. A streamed WAV cannot know its length up front,
so its header says "unknown" (0xFFFFFFFF), as OpenAI's does; players and decoders read to the
end. This module is free of MLX.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Literal, get_args

import numpy as np

from mlx_host.errors import InvalidRequestError
from mlx_host.speech import Samples

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[SpeechFormat, ...] = get_args(SpeechFormat)
MEDIA_TYPES: dict[SpeechFormat, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
#: PyAV's codec and container for each compressed format, and muxer options: Ogg pages are
#: flushed every 20 ms instead of every second, so opus chunks leave as they are encoded.
_CODECS: dict[SpeechFormat, tuple[str, str, dict[str, str]]] = {
    "mp3": ("libmp3lame", "mp3", {}),
    "opus": ("libopus", "ogg", {"page_duration": "20000"}),
    "aac": ("aac", "adts", {}),
    "flac": ("flac", "flac", {}),
}
_BIT_RATES = {"mp3": 64_000, "opus": 32_000, "aac": 64_000}


def _pcm16(samples: Samples) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _codec_available(fmt: SpeechFormat, sample_rate: int) -> bool:
    if fmt not in _CODECS:
        return True
    try:
        import av
    except ImportError:
        return False
    try:
        codec = av.codec.Codec(_CODECS[fmt][0], "w")
    except (ValueError, av.FFmpegError):
        return False
    return codec.audio_rates is None or sample_rate in codec.audio_rates


@functools.cache
def available_formats(sample_rate: int) -> list[SpeechFormat]:
    """The formats this machine can encode audio of ``sample_rate`` in."""
    return [f for f in SPEECH_FORMATS if _codec_available(f, sample_rate)]


class Encoder:
    """Encodes one response: ``encode`` each chunk of samples as it comes, then ``finish``.
    Each returns the bytes ready to send (possibly none: compressed codecs hold back a frame).
    """

    def __init__(self, fmt: SpeechFormat, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[fmt]
        self.samples_encoded = 0
        self._started = False
        self._out = bytearray()
        self._container: Any = None
        self._stream: Any = None
        if fmt in _CODECS:
            import av

            codec, container, options = _CODECS[fmt]
            self._container = av.open(self, mode="w", format=container, options=options)
            self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
            if fmt in _BIT_RATES:
                self._stream.bit_rate = _BIT_RATES[fmt]

    def write(self, data: bytes) -> int:
        """Where the container writes (PyAV's output file)."""
        self._out += data
        return len(data)

    def _take(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def encode(self, samples: Samples) -> bytes:
        """The bytes of the next chunk."""
        self.samples_encoded += len(samples)
        if self._stream is None:
            head = b"" if self._started or self.format == "pcm" else self._wav_header()
            self._started = True
            return head + _pcm16(samples)
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.float32)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._take()

    def finish(self) -> bytes:
        """The bytes the encoder held back, and the container's end."""
        if self._stream is None:
            return b"" if self._started or self.format == "pcm" else self._wav_header()
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._take()

    def _wav_header(self) -> bytes:
        unknown = 0xFFFFFFFF
        rate, width = self.sample_rate, 2
        return (
            b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * width, width, 16)
            + b"data" + struct.pack("<I", unknown)
        )  # fmt: skip


def encoder(fmt: str, sample_rate: int) -> Encoder:
    """An encoder for ``fmt``; 400 naming the formats available when it has none here."""
    available = available_formats(sample_rate)
    if fmt not in available:
        raise InvalidRequestError(
            f"response_format {fmt!r} cannot be encoded on this server; available: "
            f"{', '.join(available)}",
            param="response_format",
            code="unsupported_format",
        )
    return Encoder(fmt, sample_rate)
