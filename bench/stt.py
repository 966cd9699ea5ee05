"""Speech to text on this machine: real-time factor and time to first streamed text.

Runs mlx-host's transcription over HTTP (a real server on a free loopback port, the official
openai SDK) and mlx-whisper's own ``transcribe`` in-process, both on the same converted
Whisper tiny.en weights, on about a minute of synthesized English speech, and prints a table.
Not a test: figures depend on the machine. Usage: ``uv run python bench/stt.py [--repeats N]``.
"""

from __future__ import annotations

import mlx_host  # noqa: F401 (first: it sets OpenBLAS's defaults before numpy loads one)

# isort: split
import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "core" / "tests"))

from speech import SENTENCES, encode, spoken_passage

from mlx_host import ServiceSpec
from mlx_host.plugins import PluginManager
from mlx_host.testing import run_server

EARS = ServiceSpec(name="ears", key_prefix="ears_", transcription_model="whisper-tiny-en")


class _Ears:
    from mlx_host import hookimpl

    @hookimpl
    def mlx_host_register_services(self, register):  # type: ignore[no-untyped-def]
        register(EARS)


def clip(seconds: float) -> np.ndarray:
    """About ``seconds`` of speech at 24 kHz: the test sentences, over and over."""
    passage: tuple[str, ...] = ()
    audio = np.zeros(0, np.float32)
    while len(audio) < seconds * 24_000:
        passage += SENTENCES
        audio = spoken_passage(passage)
    return audio[: int(seconds * 24_000)]


def peer_rtf(model_dir: Path, samples_16k: np.ndarray, repeats: int) -> float:
    """mlx-whisper's own transcribe, as shipped, on the same weights."""
    import mlx_whisper

    from mlx_host.engine.stt import load_whisper

    module = sys.modules["mlx_whisper.transcribe"]
    module.ModelHolder.model = load_whisper(model_dir)  # its loader rejects our config keys
    module.ModelHolder.model_path = str(model_dir)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        mlx_whisper.transcribe(samples_16k, path_or_hf_repo=str(model_dir), fp16=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / (len(samples_16k) / 16_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after a warm-up)")
    args = parser.parse_args()
    audio = clip(args.seconds)
    wav = encode(audio, "wav")
    positions = np.linspace(0, len(audio) - 1, int(len(audio) * 16_000 / 24_000))
    samples_16k = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)

    pm = PluginManager()
    pm.register(_Ears(), "ears", "bench", "0")
    cache = Path(os.environ.get("MLX_HOST_CACHE_DIR", tempfile.mkdtemp()))
    with run_server({}, pm.load(discover=False), cache) as server:
        client = server.openai("ears", timeout=600)
        rtfs, firsts = [], []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            client.audio.transcriptions.create(model="default", file=("clip.wav", io.BytesIO(wav)))
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            first = None
            for event in client.audio.transcriptions.create(
                model="default", file=("clip.wav", io.BytesIO(wav)), stream=True
            ):
                if first is None and event.type == "transcript.text.delta":
                    first = time.perf_counter() - start
            if i:  # the first run loads and converts the model
                rtfs.append(elapsed / args.seconds)
                firsts.append(first or float("nan"))
        model = server.app.state.host.models.get_loaded("whisper-tiny-en")
        model_dir = model.engine.prepared.path
        blas = server.app.state.host.models.settings.blas
    from mlx_host.engine import BLAS

    peer = peer_rtf(model_dir, samples_16k, args.repeats)
    env = {k: os.environ.get(k, "(unset)") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
    print(
        f"\n**{platform.machine()}, {os.cpu_count()} cores; Whisper tiny.en (float32); BLAS: "
        f"{BLAS} (setting {blas}); {env}; {args.seconds:.0f} s of speech, median of "
        f"{args.repeats}**\n"
    )
    print("| what | real-time factor | time to first streamed text (s) |")
    print("|---|---|---|")
    print(
        f"| mlx-host over HTTP | {statistics.median(rtfs):.3f} | {statistics.median(firsts):.2f} |"
    )
    print(f"| mlx-whisper `transcribe` as shipped, in-process | {peer:.3f} | (no streaming) |")


if __name__ == "__main__":
    main()
