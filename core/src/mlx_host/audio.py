"""Audio in: whatever PyAV's bundled FFmpeg libraries decode (wav, flac, mp3, ogg with vorbis or
opus, m4a/aac, webm, ...), as 16 kHz mono float32, one piece at a time.

No ffmpeg binary is needed: the ``av`` wheel ships the codecs. Decoding is incremental, so a
long file never needs all of its samples in memory at once (``PCMStream`` keeps what the
current window needs). This module is free of MLX.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mlx_host.errors import InvalidRequestError

if TYPE_CHECKING:
    import av

SAMPLE_RATE = 16_000
#: What callers may send; anything else FFmpeg decodes works too.
SUPPORTED = "wav, flac, mp3, ogg (vorbis, opus), m4a (aac), webm"


class AudioError(InvalidRequestError):
    """The upload is not audio this server can decode, or is longer than allowed (400)."""

    code = "invalid_audio"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="file")


@dataclass(frozen=True)
class AudioInfo:
    """What a probe found out about an upload."""

    format: str
    codec: str
    duration: float | None  # seconds, where the container says


def _open(file: BinaryIO) -> av.container.InputContainer:
    import av

    file.seek(0)
    try:
        return av.open(file, mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AudioError(
            f"The file is not audio this server can read; send one of: {SUPPORTED}"
        ) from exc


def probe(
    file: BinaryIO,
    max_seconds: float,
    *,
    limit: str = "MLX_HOST_MAX_AUDIO_SECONDS",
    measure: bool = False,
) -> AudioInfo:
    """Check that ``file`` holds decodable audio no longer than ``max_seconds`` (the limit
    that ``limit`` names in messages); 400 naming what is wrong otherwise. Where the container
    does not say how long it is (a browser's webm), its length is checked when it is decoded,
    or here, by decoding it, with ``measure``."""
    container = _open(file)
    try:
        if not container.streams.audio:
            raise AudioError(f"The file has no audio track; send one of: {SUPPORTED}")
        stream = container.streams.audio[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if duration is not None and duration > max_seconds:
            raise AudioError(
                f"The audio is {duration:.0f} s long; this server takes at most "
                f"{max_seconds:.0f} s ({limit})"
            )
        if duration is not None and duration <= 0:
            raise AudioError("The audio is empty")
        info = AudioInfo(container.format.name, stream.codec_context.name, duration)
    finally:
        container.close()
        file.seek(0)
    if duration is None and measure:
        samples = sum(len(piece) for piece in decode(file, max_seconds, limit=limit))
        file.seek(0)
        info = AudioInfo(info.format, info.codec, samples / SAMPLE_RATE)
    return info


def decode(
    file: BinaryIO, max_seconds: float, *, limit: str = "MLX_HOST_MAX_AUDIO_SECONDS"
) -> Iterator[np.ndarray]:
    """``file``'s audio as 16 kHz mono float32 pieces, decoded as they are asked for; raises
    ``AudioError`` for broken data, or once more than ``max_seconds`` (the limit ``limit``
    names) were decoded."""
    import av

    container = _open(file)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    most = int(max_seconds * SAMPLE_RATE)
    decoded = 0

    def pieces(frames: list[Any]) -> Iterator[np.ndarray]:
        nonlocal decoded
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            decoded += len(samples)
            if decoded > most:
                raise AudioError(
                    f"The audio is longer than {max_seconds:.0f} s, the most this server "
                    f"takes ({limit})"
                )
            yield samples

    try:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            yield from pieces(resampler.resample(frame))
        yield from pieces(resampler.resample(None))  # what the resampler still holds
    except av.FFmpegError as exc:
        raise AudioError(
            f"The audio could not be decoded past {decoded / SAMPLE_RATE:.1f} s; the file "
            "may be damaged"
        ) from exc
    finally:
        container.close()


class PCMStream:
    """Samples of a decoding in progress, read by position: keeps only what lies between the
    last ``forget`` and the furthest ``read``."""

    def __init__(self, pieces: Iterator[np.ndarray]) -> None:
        self._pieces = pieces
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        self._start = 0  # position of the first sample held
        self.done = False

    @property
    def decoded(self) -> int:
        """Samples decoded so far."""
        return self._start + self._held_samples

    def _joined(self) -> np.ndarray:
        if len(self._held) != 1:
            self._held = [np.concatenate(self._held) if self._held else np.zeros(0, np.float32)]
        return self._held[0]

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)``, fewer where the audio ends first."""
        while self.decoded < end and not self.done:
            try:
                piece = next(self._pieces)
            except StopIteration:
                self.done = True
                break
            self._held.append(piece)
            self._held_samples += len(piece)
        return self._joined()[max(0, start - self._start) : max(0, end - self._start)]

    def forget(self, before: int) -> None:
        """Drop the samples before position ``before``."""
        held = self._joined()
        drop = min(max(0, before - self._start), len(held))
        self._held = [held[drop:]]
        self._held_samples -= drop
        self._start += drop
