"""Side-by-side benchmark: mlx-host against mlx-lm's own `mlx_lm.server`, same model files,
both servers up at once, rounds interleaved.

    uv run python bench/compare.py [--tokens 64] [--levels 1,8,32,64] [--rounds 3] [--turns 10]
                                   [--workload write|edit]

Both servers run here on loopback, on the embedded SmolLM2 converted to this device's format,
each with the same optimized BLAS loaded before MLX (so the table compares servers, not BLAS
libraries), and get the same system message and prompts (`bench/workloads.py`), so greedy
decoding writes the same tokens. At each concurrency level, each round measures mlx-host,
mlx_lm.server and the raw engine ceiling (mlx-lm's `BatchGenerator` driven in this process, no
HTTP), in an order that rotates every round, so that machine drift lands on all three alike.
Tokens are counted from `usage`. Prints markdown tables: aggregate tokens/s (median and spread
over rounds), TTFT p50/p95 over every request of every round, failed requests, and the host/peer
and host/ceiling ratios; TTFT at turn 1 and turn N of a growing conversation; and mlx-host's
overhead per request over its own engine called in-process. Every request is bounded by a
timeout; one that fails or times out is counted, not retried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from workloads import SYSTEM, TOPICS, WORKLOADS

import mlx_host.engine  # noqa: F401  (the BLAS and allocator, before MLX)
from mlx_host.keys import generate_key
from mlx_host.testing import free_socket

Prompt = Callable[[int], list[dict]]

TIMEOUT = 300


def free_port() -> int:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def start(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited; see {log}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"server did not start; see {log}")


async def one_stream(
    client: httpx.AsyncClient, url: str, headers: dict, messages: list, tokens: int
) -> tuple[float, float, int, str]:
    """(ttft, total seconds, completion tokens, text) of one streamed chat request."""
    body = {"messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    ttft, count, text = None, 0, []
    async with client.stream("POST", url, headers=headers, json=body, timeout=TIMEOUT) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft or time.perf_counter() - t0
                    text.append(piece)
    return ttft or 0.0, time.perf_counter() - t0, count or len(text), "".join(text)


async def concurrency(
    url: str, headers: dict, level: int, tokens: int, prompt: Prompt
) -> dict[str, Any]:
    """One round of ``level`` concurrent streams: tokens/s over the round's wall time, each
    request's TTFT, and how many failed."""
    limits = httpx.Limits(max_connections=level + 4, max_keepalive_connections=level + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(one_stream(client, url, headers, prompt(i), tokens) for i in range(level)),
            return_exceptions=True,
        )
        wall = time.perf_counter() - t0
    done = [r for r in runs if not isinstance(r, BaseException)]
    return {
        "tok_s": sum(r[2] for r in done) / wall,
        "ttfts": [r[0] for r in done],
        "failed": len(runs) - len(done),
    }


def ceiling(model: Any, tokenizer: Any, level: int, tokens: int, prompt: Prompt) -> dict[str, Any]:
    """One round of the raw engine: mlx-lm's ``BatchGenerator`` in this process, as shipped,
    with the servers' prompts, prefill included."""
    from mlx_lm.generate import BatchGenerator

    prompts = [tokenizer.apply_chat_template(prompt(i), add_generation_prompt=True)
               for i in range(level)]  # fmt: skip
    generator = BatchGenerator(
        model, stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=level, prefill_batch_size=min(8, level), prefill_step_size=512,
    )  # fmt: skip
    t0 = time.perf_counter()
    uids = generator.insert(prompts, max_tokens=[tokens] * level)
    first: dict[int, float] = {}
    left, count = set(uids), 0
    while left:
        for r in generator.next_generated():
            first.setdefault(r.uid, time.perf_counter() - t0)
            count += 1
            if r.finish_reason is not None:
                left.discard(r.uid)
    wall = time.perf_counter() - t0
    generator.close()
    return {"tok_s": count / wall, "ttfts": list(first.values()), "failed": 0}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else 0.0


async def conversation(url: str, headers: dict, turns: int, tokens: int) -> list[float]:
    """TTFT of each turn of one conversation that grows by a user and an assistant message."""
    messages: list[dict] = [SYSTEM]
    ttfts = []
    async with httpx.AsyncClient() as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Tell me about {TOPICS[turn]}."})
            ttft, _, _, text = await one_stream(client, url, headers, messages, tokens)
            messages.append({"role": "assistant", "content": text})
            ttfts.append(ttft)
    return ttfts


async def engine_direct(model_dir: Path, tokens: int, repeats: int, prompt: Prompt) -> float:
    """Median seconds for one request on mlx-host's engine with no HTTP, auth or plugins."""
    from mlx_host.engine.scheduler import BatchScheduler
    from mlx_host.generation import SamplingParams
    from mlx_host.models.memory import MemoryBudget

    unbounded = MemoryBudget(1 << 62, held=lambda: 0).claim("bench")
    scheduler = BatchScheduler(model_dir, name="bench", claim=unbounded)
    tokenizer = await asyncio.wrap_future(scheduler.start())
    times = []
    for i in range(repeats + 1):
        ids = tokenizer.apply_chat_template(prompt(100 + i), add_generation_prompt=True)
        t0 = time.perf_counter()
        async for _ in scheduler.generate(list(ids), SamplingParams(max_tokens=tokens)):
            pass
        times.append(time.perf_counter() - t0)
    await asyncio.to_thread(scheduler.close)
    return statistics.median(times[1:])


async def http_single(url: str, headers: dict, tokens: int, repeats: int, prompt: Prompt) -> float:
    async with httpx.AsyncClient() as client:
        times = [
            (await one_stream(client, url, headers, prompt(100 + i), tokens))[1]
            for i in range(repeats + 1)
        ]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent streams to measure")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument("--turns", type=int, default=10, help="turns of the conversation")
    parser.add_argument("--workload", choices=WORKLOADS, default="write", help="the prompts")
    args = parser.parse_args()
    prompt = WORKLOADS[args.workload]
    levels = [int(x) for x in args.levels.split(",")]

    from mlx_host.engine import BLAS
    from mlx_host.engine.device import preferred_weight_format
    from mlx_host.models.sources import prepare
    from mlx_host.models.spec import EMBEDDED_SOURCE
    from mlx_host.settings import get_settings

    cache = get_settings().cache_dir
    fmt = preferred_weight_format("auto")
    model_dir = prepare(EMBEDDED_SOURCE, cache, fmt)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    key = generate_key("vista_")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    host_port, peer_port = free_port(), free_port()
    host_env = {**env, "MLX_HOST_API_KEYS": key, "MLX_HOST_PORT": str(host_port),
                "MLX_HOST_CACHE_DIR": str(cache), "MLX_HOST_LOG_LEVEL": "warning",
                "MLX_HOST_MAX_BATCH_SIZE": str(max(levels)),
                "MLX_HOST_MAX_QUEUED_REQUESTS": str(max(levels))}  # fmt: skip
    preload = "" if BLAS in ("reference", "accelerate") else (
        f"import ctypes; ctypes.CDLL({BLAS!r}, mode=ctypes.RTLD_GLOBAL); "
    )  # fmt: skip
    peer_cmd = [sys.executable, "-c",
                f"import sys; {preload}from mlx_lm.server import main; "
                f"sys.argv=['mlx_lm.server','--model',{str(model_dir)!r},'--port','{peer_port}',"
                f"'--decode-concurrency','{max(levels)}']; main()"]  # fmt: skip
    servers = {
        "mlx-host": (
            start(
                [sys.executable, "-m", "mlx_host.cli", "serve"],
                host_env,
                host_port,
                logs / "bench-mlx-host.log",
            ),
            f"http://127.0.0.1:{host_port}/v1/chat/completions",
            {"Authorization": f"Bearer {key}"},
        ),
        "mlx_lm.server": (
            start(peer_cmd, env, peer_port, logs / "bench-mlx-lm.log"),
            f"http://127.0.0.1:{peer_port}/v1/chat/completions",
            {},
        ),
    }
    from mlx_lm import load

    model, tokenizer = load(str(model_dir))
    runners: dict[str, Callable[[int], dict[str, Any]]] = {
        name: (lambda level, url=url, headers=headers:
               asyncio.run(concurrency(url, headers, level, args.tokens, prompt)))
        for name, (_, url, headers) in servers.items()
    }  # fmt: skip
    runners["raw BatchGenerator"] = lambda level: ceiling(
        model, tokenizer, level, args.tokens, prompt
    )
    names = list(runners)
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for name in names:  # warm up: each loads, compiles and caches its first prompt
            runners[name](1)
        for level in levels:
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    result = runners[name](level)
                    rounds.setdefault((name, level), []).append(result)
                    print(f"{name} x{level} round {r + 1}: {result['tok_s']:.1f} tok/s, "
                          f"TTFT p95 {p95(result['ttfts']):.2f} s, {result['failed']} failed",
                          file=sys.stderr)  # fmt: skip
        turns = {name: asyncio.run(conversation(url, headers, args.turns, 24))
                 for name, (_, url, headers) in servers.items()} if args.turns else {}  # fmt: skip
        host_url, host_headers = servers["mlx-host"][1:]
        http = asyncio.run(http_single(host_url, host_headers, args.tokens, 3, prompt))
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    direct = asyncio.run(engine_direct(model_dir, args.tokens, 3, prompt))

    print(f"\n**{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"model: SmolLM2-135M-Instruct ({fmt}); BLAS: {BLAS}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{args.tokens} new tokens per request, greedy; workload: {args.workload}; "
          f"{args.rounds} interleaved rounds per level**\n")  # fmt: skip
    print("| streams | run | tokens/s median (min-max) | TTFT p50 (s) | TTFT p95 (s) | failed |")
    print("|---|---|---|---|---|---|")
    medians: dict[tuple[str, int], float] = {}
    tails: dict[tuple[str, int], float] = {}
    for level in levels:
        for name in names:
            results = rounds[name, level]
            speeds = [x["tok_s"] for x in results]
            ttfts = [t for x in results for t in x["ttfts"]]
            medians[name, level] = statistics.median(speeds)
            tails[name, level] = p95(ttfts)
            print(f"| {level} | {name} | {medians[name, level]:.1f} ({min(speeds):.1f}-"
                  f"{max(speeds):.1f}) | {statistics.median(ttfts) if ttfts else 0:.2f} | "
                  f"{tails[name, level]:.2f} | {sum(x['failed'] for x in results)} |")  # fmt: skip
    print("\n| streams | host / peer tokens/s | host / raw ceiling | TTFT p95 host / peer |")
    print("|---|---|---|---|")
    for level in levels:
        host, peer = medians["mlx-host", level], medians["mlx_lm.server", level]
        raw = medians["raw BatchGenerator", level]
        tail = tails["mlx-host", level] / max(tails["mlx_lm.server", level], 1e-9)
        print(f"| {level} | {host / peer:.2f}x | {host / raw:.2f}x | {tail:.2f}x |")
    if turns:
        print(f"\n| server | TTFT turn 1 (s) | TTFT turn {args.turns} (s) | turn {args.turns} / "
              "turn 1 |")  # fmt: skip
        print("|---|---|---|---|")
        for name, t in turns.items():
            print(f"| {name} | {t[0]:.2f} | {t[-1]:.2f} | {t[-1] / t[0]:.2f}x |")
    overhead = (http - direct) / http
    print("\n| one request, 1 stream | seconds (median of 3) |")
    print("|---|---|")
    print(f"| mlx-host engine, in-process | {direct:.3f} |")
    print(f"| mlx-host over HTTP (auth, routing, plugins, SSE) | {http:.3f} |")
    print(f"| host overhead | {overhead:.1%} |")


if __name__ == "__main__":
    main()
