"""Decoding audio a piece at a time: memory follows the window being read, not the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from speech import encode

from mlx_host.audio import SAMPLE_RATE, AudioError, PCMStream, decode, probe


def test_a_stream_keeps_only_what_lies_between_forget_and_read() -> None:
    piece = 1_000
    made = 0

    def pieces():
        nonlocal made
        while made < 100:
            made += 1
            yield np.full(piece, made, np.float32)

    pcm = PCMStream(pieces())
    window = pcm.read(0, 5_000)
    assert len(window) == 5_000 and made == 5  # decoded only as far as asked
    pcm.forget(4_000)
    assert list(pcm.read(4_000, 4_002)) == [5, 5]
    later = pcm.read(50_000, 52_000)
    assert later[0] == 51 and made == 52
    pcm.forget(50_000)
    held = sum(len(h) for h in pcm._held)
    assert held <= 2 * piece  # nothing before the last forget is kept
    assert len(pcm.read(99_000, 200_000)) == 1_000 and pcm.done


def test_any_format_decodes_to_16khz_mono() -> None:
    tone = np.sin(np.linspace(0, 2000 * np.pi, 24_000)).astype(np.float32) * 0.5
    for fmt in ("wav", "mp3", "opus", "m4a"):
        data = io.BytesIO(encode(tone, fmt))
        info = probe(data, max_seconds=10)
        assert info.duration == pytest.approx(1.0, abs=0.1)
        samples = np.concatenate(list(decode(data, max_seconds=10)))
        assert abs(len(samples) - SAMPLE_RATE) < SAMPLE_RATE * 0.1, fmt
        assert 0.2 < np.abs(samples).max() < 0.8, fmt


def test_decoding_stops_at_the_duration_limit_even_without_a_header() -> None:
    tone = np.zeros(24_000 * 3, np.float32)
    data = io.BytesIO(encode(tone, "mp3"))
    with pytest.raises(AudioError, match="longer than 2 s"):
        for _ in decode(data, max_seconds=2):
            pass


def test_a_limit_is_checked_by_decoding_when_the_container_has_no_duration() -> None:
    """A browser's webm (MediaRecorder) is written as it is recorded: no duration in it."""
    import av

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
            self.data += b
            return len(b)

    sink = Unseekable()
    with av.open(sink, mode="w", format="webm") as output:
        stream = output.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 48_000 * 3), np.float32), "flt", "mono")
        frame.sample_rate = 48_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    webm = io.BytesIO(bytes(sink.data))
    assert probe(webm, 2.0).duration is None  # passes: checked later, as it is decoded
    with pytest.raises(AudioError, match=r"longer than 2 s.*\(a turn's limit\)"):
        probe(webm, 2.0, limit="a turn's limit", measure=True)
    measured = probe(webm, 5.0, measure=True)
    assert measured.duration == pytest.approx(3.0, abs=0.05) and webm.tell() == 0
