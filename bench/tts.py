"""Text to speech on this machine: time to first audio byte, real-time factor, and the voice
turn's time to first audio.

Runs mlx-host's ``/v1/audio/speech`` over HTTP (a real server on a free loopback port, every
installed plugin, the official openai SDK) and hibari's own ``stream`` in-process on the same
voice, then lbrxvoice's voice turn on the embedded models (Whisper tiny.en, SmolLM2-135M,
hibari), and prints a table. Not a test: figures depend on the machine.
Usage: ``uv run python bench/tts.py [--repeats N]``.
"""

from __future__ import annotations

import mlx_host  # noqa: F401 (first: it sets OpenBLAS's defaults before numpy loads one)

# isort: split
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "core" / "tests"))

from speech import SENTENCES

from mlx_host.testing import RunningServer, run_server

SHORT = "Hello there, how can I help you today?"
LONG = " ".join(SENTENCES * 2)
QUESTION = "What is the capital of France?"


def median_ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f}"


def repeat(run: Callable[[], float], repeats: int) -> list[float]:
    """``run``'s figures after one warm-up run."""
    run()
    return [run() for _ in range(repeats)]


def first_byte(server: RunningServer, text: str, fmt: str) -> tuple[float, float]:
    """Seconds to the first audio byte and to the last, for one speech request."""
    client = server.openai("lbrxvoice")
    start = time.perf_counter()
    first = None
    with client.audio.speech.with_streaming_response.create(
        model="default", voice="heart", input=text, response_format=fmt
    ) as response:
        for _ in response.iter_bytes(chunk_size=None):
            first = first or time.perf_counter() - start
    return first or float("nan"), time.perf_counter() - start


def hibari_in_process(text: str) -> tuple[float, float, float]:
    """hibari's own ``stream`` (as shipped): seconds to the first sentence, to the end, and
    seconds of audio."""
    from hibari import Hibari

    voice = Hibari(voice="heart", threads=1)
    voice("Warm up.")
    start = time.perf_counter()
    first, samples = None, 0
    for chunk in voice.stream(text):
        first = first or time.perf_counter() - start
        samples += len(chunk)
    return first or float("nan"), time.perf_counter() - start, samples / voice.sample_rate


def voice_turn(server: RunningServer, question: bytes) -> tuple[float, float, float]:
    """Seconds from sending a spoken question to the first audio of the answer (client side),
    the server's own figure for it, and to the end of the turn."""
    start = time.perf_counter()
    first = None
    with httpx.stream(
        "POST", f"{server.url}/api/v1/lbrxvoice/turn",
        headers={"Authorization": f"Bearer {server.keys['lbrxvoice']}"},
        files={"file": ("question.wav", question)}, timeout=300,
    ) as response:  # fmt: skip
        for line in response.iter_lines():
            if not line:
                continue
            event = json.loads(line[6:])
            if event["type"] == "turn.audio.delta":
                first = first or time.perf_counter() - start
            elif event["type"] == "turn.done":
                server_first = event["timings"]["first_audio"]
    return first or float("nan"), server_first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (after a warm-up)")
    args = parser.parse_args()
    cache = Path(os.environ.get("MLX_HOST_CACHE_DIR", tempfile.mkdtemp()))
    rows = []
    with run_server({}, None, cache) as server:
        for fmt in ("pcm", "mp3", "opus"):
            firsts = repeat(lambda fmt=fmt: first_byte(server, SHORT, fmt)[0], args.repeats)
            rows.append(f"| mlx-host over HTTP, {fmt}, short sentence | {median_ms(firsts)} | |")
        whole = repeat(lambda: first_byte(server, LONG, "pcm")[1], args.repeats)
        pcm = server.openai("lbrxvoice").audio.speech.create(
            model="default", voice="heart", input=LONG, response_format="pcm"
        )
        long_seconds = len(pcm.content) / 2 / 24_000
        rows.append(
            f"| mlx-host over HTTP, pcm, {len(SENTENCES) * 2} sentences | | "
            f"{statistics.median(whole) / long_seconds:.4f} |"
        )
        question = (
            server.openai("lbrxvoice")
            .audio.speech.create(
                model="default", voice="heart", input=QUESTION, response_format="wav"
            )
            .content
        )
        turns = [voice_turn(server, question) for _ in range(args.repeats + 1)][1:]
    short = [hibari_in_process(SHORT) for _ in range(args.repeats)]
    rows.append(
        f"| hibari `stream` in-process, short sentence | {median_ms([s[0] for s in short])} | |"
    )
    long = [hibari_in_process(LONG) for _ in range(3)]
    rows.append(
        f"| hibari `stream` in-process, {len(SENTENCES) * 2} sentences | | "
        f"{statistics.median(t / s for _, t, s in long):.4f} |"
    )
    print(
        f"\n**{platform.machine()}, {os.cpu_count()} cores; hibari voice heart (int8 ONNX, 24 "
        f"kHz); median of {args.repeats}**\n"
    )
    print("| what | time to first audio byte (ms) | real-time factor |")
    print("|---|---|---|")
    print("\n".join(rows))
    print(
        f"\n**Voice turn** (spoken question {QUESTION!r}; Whisper tiny.en, SmolLM2-135M, hibari;"
        f" median of {args.repeats}):\n"
    )
    print("| what | seconds |")
    print("|---|---|")
    client, server_side, whole_turn = (statistics.median(t[k] for t in turns) for k in range(3))
    print(f"| first audio of the answer, client side | {client:.2f} |")
    print(f"| first audio of the answer, server's timing | {server_side:.2f} |")
    print(f"| whole turn | {whole_turn:.2f} |")


if __name__ == "__main__":
    main()
