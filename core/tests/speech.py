"""Real speech for transcription tests: sentences spoken by hibari (offline TTS) and encoded
with PyAV into every format the server takes, and a word error rate to judge transcripts."""

from __future__ import annotations

import io
import re
from functools import cache

import av
import numpy as np

TTS_RATE = 24_000
SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring the quarterly report to the meeting.",
    "The engineers tested the new server on two small machines.",
    "Our train leaves the station early in the evening.",
    "A good transcription keeps every word that the speaker said.",
)
#: (container format, codec) for each upload format.
FORMATS = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
    "ogg": ("ogg", "vorbis"),
    "opus": ("ogg", "libopus"),
    "m4a": ("ipod", "aac"),
    "webm": ("webm", "libopus"),
}


@cache
def _voice():
    from hibari import Hibari

    return Hibari(voice="heart", threads=1)


@cache
def spoken(text: str) -> np.ndarray:
    """``text`` spoken, 24 kHz mono float32."""
    return np.asarray(_voice()(text), dtype=np.float32)


def spoken_passage(sentences: tuple[str, ...], pause: float = 0.4) -> np.ndarray:
    """The sentences one after another, with a pause after each."""
    gap = np.zeros(int(TTS_RATE * pause), np.float32)
    return np.concatenate([part for s in sentences for part in (spoken(s), gap)])


def encode(samples: np.ndarray, fmt: str, rate: int = TTS_RATE) -> bytes:
    """``samples`` as a file of ``fmt`` (a key of ``FORMATS``)."""
    container, codec = FORMATS[fmt]
    out_rate = 48_000 if codec == "libopus" else rate  # opus takes 48 kHz
    if out_rate != rate:
        positions = np.linspace(0, len(samples) - 1, int(len(samples) * out_rate / rate))
        samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        if codec == "vorbis":  # FFmpeg's own vorbis encoder: experimental, stereo only
            stream = output.add_stream(codec, rate=out_rate, options={"strict": "experimental"})
            stream.layout = "stereo"
            planes = np.stack([samples, samples]).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
        else:
            stream = output.add_stream(codec, rate=out_rate)
            stream.layout = "mono"
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = out_rate
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; numbers written as digits stay digits."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Substitutions, insertions and deletions over the reference's word count."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(1, len(ref))
