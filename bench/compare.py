"""Side-by-side benchmark: mlx-host against mlx-lm's own `mlx_lm.server`, same model files.

    uv run python bench/compare.py [--tokens 48] [--levels 1,4,16] [--turns 10]

Both servers run here on loopback, on the embedded SmolLM2 converted to this device's format,
each with the same optimized BLAS loaded before MLX (so the table compares servers, not BLAS
libraries). Prints markdown tables: aggregate decode tokens/s and TTFT p50/p95 per concurrency
level; TTFT at turn 1 and turn N of a growing conversation; and mlx-host's overhead per request
over its own engine called in-process. Every request is bounded by a timeout.
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
from pathlib import Path

import httpx

from mlx_host.keys import generate_key
from mlx_host.testing import free_socket

TIMEOUT = 300
TOPICS = [
    "rivers",
    "owls",
    "bridges",
    "volcanoes",
    "bread",
    "chess",
    "comets",
    "forests",
    "trains",
    "honey",
    "glaciers",
    "violins",
    "deserts",
    "coral",
    "kites",
    "lighthouses",
]


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
        r.raise_for_status()
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


# An explicit system message: the service adds none, so the engine sees the same tokens.
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def prompt(i: int) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": f"Write a short paragraph about {TOPICS[i % 16]}."}]


async def concurrency(url: str, headers: dict, level: int, tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        await one_stream(client, url, headers, prompt(99), 4)  # warm up
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(one_stream(client, url, headers, prompt(i), tokens) for i in range(level))
        )
        wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in runs)
    return {
        "tok_s": sum(r[2] for r in runs) / wall,
        "p50": statistics.median(ttfts),
        "p95": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
    }


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


async def engine_direct(model_dir: Path, tokens: int, repeats: int) -> float:
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


async def http_single(url: str, headers: dict, tokens: int, repeats: int) -> float:
    async with httpx.AsyncClient() as client:
        times = [
            (await one_stream(client, url, headers, prompt(100 + i), tokens))[1]
            for i in range(repeats + 1)
        ]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per request")
    parser.add_argument("--levels", default="1,4,16", help="concurrent streams to measure")
    parser.add_argument("--turns", type=int, default=10, help="turns of the conversation")
    args = parser.parse_args()
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
                "MLX_HOST_MAX_BATCH_SIZE": str(max(levels))}  # fmt: skip
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
    results: dict[str, dict] = {}
    try:
        for name, (_, url, headers) in servers.items():
            res = results[name] = {}
            for level in levels:
                res[level] = asyncio.run(concurrency(url, headers, level, args.tokens))
                print(f"{name} x{level}: {res[level]}", file=sys.stderr)
            res["turns"] = asyncio.run(conversation(url, headers, args.turns, 24))
            print(f"{name} turns: {res['turns']}", file=sys.stderr)
        host_url, host_headers = servers["mlx-host"][1:]
        http = asyncio.run(http_single(host_url, host_headers, args.tokens, 3))
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    direct = asyncio.run(engine_direct(model_dir, args.tokens, 3))

    print(f"\n**{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"model: SmolLM2-135M-Instruct ({fmt}); BLAS: {BLAS}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{args.tokens} new tokens per request, greedy**\n")  # fmt: skip
    print("| concurrent streams | server | aggregate tokens/s | TTFT p50 (s) | TTFT p95 (s) |")
    print("|---|---|---|---|---|")
    for level in levels:
        for name in servers:
            r = results[name][level]
            print(f"| {level} | {name} | {r['tok_s']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} |")
    print(
        f"\n| server | TTFT turn 1 (s) | TTFT turn {args.turns} (s) | turn {args.turns} / turn 1 |"
    )
    print("|---|---|---|---|")
    for name in servers:
        t = results[name]["turns"]
        print(f"| {name} | {t[0]:.2f} | {t[-1]:.2f} | {t[-1] / t[0]:.2f}x |")
    overhead = (http - direct) / http
    print("\n| one request, 1 stream | seconds (median of 3) |")
    print("|---|---|")
    print(f"| mlx-host engine, in-process | {direct:.3f} |")
    print(f"| mlx-host over HTTP (auth, routing, plugins, SSE) | {http:.3f} |")
    print(f"| host overhead | {overhead:.1%} |")


if __name__ == "__main__":
    main()
