"""A bounded load run on loopback: concurrent clients of every bundled service for a fixed time,
on the embedded models, through one real server.

Each client loops on its service's work: vista and fork chat in sessions (every turn is saved),
anydatanext embeds and answers JSON, whisp transcribes a short clip, lbrxvoice speaks a
sentence. Reported: requests served and errors by status, p50 and p99 latency per service,
the server's memory before and after, and whether every session message written during the
run is there afterwards. Not a test: figures depend on the machine.
Usage: ``uv run python bench/load.py [--seconds 60] [--clients 3]``.
"""

from __future__ import annotations

# First: it loads the optimized BLAS before anything imports mlx (mlx_host.runtime).
import mlx_host.engine  # noqa: F401

# isort: split
import argparse
import io
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mlx_host.testing import RunningServer, run_server

SERVICES = ("vista", "fork", "anydatanext", "whisp", "lbrxvoice")


class Tally:
    """Latencies and statuses per service, from every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter[int]] = defaultdict(Counter)
        self.session_messages: dict[str, int] = {}  # session id -> messages written
        self.session_owner: dict[str, str] = {}  # session id -> service

    def add(self, service: str, status: int, seconds: float) -> None:
        with self.lock:
            self.status[service][status] += 1
            if status == 200:
                self.latency[service].append(seconds)


def clip(server: RunningServer) -> bytes:
    """A short spoken sentence, made by the server's own speech endpoint."""
    headers = {"Authorization": f"Bearer {server.keys['lbrxvoice']}"}
    body = {"model": "default", "input": "The meeting starts at nine.", "response_format": "wav"}
    return httpx.post(f"{server.api_url}/audio/speech", json=body, headers=headers,
                      timeout=120).content  # fmt: skip


def client(server: RunningServer, service: str, until: float, tally: Tally, audio: bytes) -> None:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    http = httpx.Client(base_url=server.api_url, headers=headers, timeout=300)
    session = None
    if service in ("vista", "fork"):
        session = http.post("/sessions", json={}).json()["id"]
        tally.session_messages[session] = 0
        tally.session_owner[session] = service
    turn = 0
    while time.monotonic() < until:
        turn += 1
        start = time.perf_counter()
        if service in ("vista", "fork"):
            body = {"messages": [{"role": "user", "content": f"Say one word, turn {turn}."}],
                    "max_tokens": 16, "session_id": session}  # fmt: skip
            response = http.post("/chat/completions", json=body)
            if response.status_code == 200:
                with tally.lock:
                    tally.session_messages[session] += 2  # the question and the answer
        elif service == "anydatanext":
            if turn % 2:
                response = http.post("/embeddings", json={"input": [f"row {turn}", "a query"]})
            else:
                body = {"messages": [{"role": "user", "content": "A person, as JSON."}],
                        "max_tokens": 32}  # fmt: skip
                response = http.post("/chat/completions", json=body)
        elif service == "whisp":
            files = {"file": ("clip.wav", io.BytesIO(audio), "audio/wav")}
            response = http.post("/audio/transcriptions", files=files, data={"model": "default"})
        else:
            body = {"model": "default", "input": "Hello there.", "response_format": "pcm"}
            response = http.post("/audio/speech", json=body)
        tally.add(service, response.status_code, time.perf_counter() - start)
    http.close()


def memory(server: RunningServer) -> int:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    usage = httpx.get(f"{server.api_url}/models/memory/usage", headers=headers).json()
    return int(usage["process"]["resident_bytes"] or usage["used_bytes"])


def sessions_intact(server: RunningServer, tally: Tally) -> tuple[int, int]:
    """(sessions whose stored messages match what was written, sessions)."""
    intact = 0
    for session, written in tally.session_messages.items():
        headers = {"Authorization": f"Bearer {server.keys[tally.session_owner[session]]}"}
        url = f"{server.api_url}/sessions/{session}/messages"
        response = httpx.get(url, headers=headers)
        if response.status_code == 200 and len(response.json()["data"]) == written:
            intact += 1
    return intact, len(tally.session_messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=2, help="per service")
    args = parser.parse_args()
    cache = Path(os.environ.get("MLX_HOST_CACHE_DIR", tempfile.mkdtemp()))
    tally = Tally()
    with run_server({}, cache_dir=cache) as server:
        audio = clip(server)  # loads the speech model; the others load on first use
        before = memory(server)
        until = time.monotonic() + args.seconds
        jobs = [s for s in SERVICES for _ in range(args.clients)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for future in [pool.submit(client, server, s, until, tally, audio) for s in jobs]:
                future.result()
        after = memory(server)
        intact, sessions = sessions_intact(server, tally)
    print(
        f"\n**{platform.machine()}, {os.cpu_count()} cores; embedded models; "
        f"{args.clients} clients per service for {args.seconds:.0f} s**\n"
    )
    print("| service | served | errors by status | p50 (s) | p99 (s) |")
    print("|---|---|---|---|---|")
    for service in SERVICES:
        latencies = sorted(tally.latency[service])
        errors = {s: n for s, n in tally.status[service].items() if s != 200}
        p50 = statistics.median(latencies) if latencies else float("nan")
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
        print(f"| {service} | {len(latencies)} | {errors or 'none'} | {p50:.2f} | {p99:.2f} |")
    print(f"\nmemory {before / 2**30:.2f} GiB before, {after / 2**30:.2f} GiB after; "
          f"sessions intact: {intact} of {sessions}")  # fmt: skip


if __name__ == "__main__":
    main()
