"""Structured output on this machine: decoding speed held to a JSON schema vs free, at 1 and 8
concurrent streams, on the same model and server.

Every request asks for a long answer (a list of 12 sentences); the constrained ones get a
schema for it, the free ones the same prompt without one. Tokens per second is completion
tokens over wall time, summed over the concurrent streams. Not a test: figures depend on the
machine. Usage: ``uv run python bench/structured.py [--repeats N]``.
"""

from __future__ import annotations

import mlx_host  # noqa: F401 (first: it sets OpenBLAS's defaults before numpy loads one)

# isort: split
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlx_host import ServicePolicy, ServiceSpec, hookimpl
from mlx_host.plugins import PluginManager
from mlx_host.testing import RunningServer, run_server

BENCH = ServiceSpec(
    name="bench",
    key_prefix="bench_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(temperature=0.0, max_tokens=160, max_tokens_cap=160),
)
PROMPT = "Write twelve different sentences about the sea, as a list."
SCHEMA = {
    "type": "object",
    "properties": {
        "sentences": {
            "type": "array",
            "items": {"type": "string", "maxLength": 80},
            "minItems": 12,
            "maxItems": 12,
        }
    },
    "required": ["sentences"],
    "additionalProperties": False,
}


class _Bench:
    @hookimpl
    def mlx_host_register_services(self, register):  # type: ignore[no-untyped-def]
        register(BENCH)


def one(server: RunningServer, constrained: bool) -> int:
    extra: dict[str, Any] = {}
    if constrained:
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "sentences", "schema": SCHEMA},
        }
    reply = server.openai("bench").chat.completions.create(
        model="default", messages=[{"role": "user", "content": PROMPT}], **extra
    )
    if constrained and reply.choices[0].finish_reason == "stop":
        json.loads(reply.choices[0].message.content)  # must parse
    return reply.usage.completion_tokens


def rate(server: RunningServer, streams: int, constrained: bool) -> float:
    """Aggregate completion tokens per second of ``streams`` requests sent together."""
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        tokens = sum(pool.map(lambda _: one(server, constrained), range(streams)))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after a warm-up)")
    args = parser.parse_args()
    pm = PluginManager()
    pm.register(_Bench(), "bench", "bench", "0")
    cache = Path(os.environ.get("MLX_HOST_CACHE_DIR", tempfile.mkdtemp()))
    rows = []
    with run_server({}, pm.load(discover=False), cache) as server:
        rate(server, 1, True)  # load the model and build the grammar tokenizer
        for streams in (1, 8):
            free = statistics.median(rate(server, streams, False) for _ in range(args.repeats))
            held = statistics.median(rate(server, streams, True) for _ in range(args.repeats))
            rows.append(f"| {streams} | {free:.1f} | {held:.1f} | {held / free:.0%} |")
    print(
        f"\n**{platform.machine()}, {os.cpu_count()} cores; SmolLM2-135M-Instruct (float32); "
        f"greedy, up to 160 tokens; median of {args.repeats}**\n"
    )
    print("| concurrent streams | free tokens/s | JSON-schema tokens/s | constrained / free |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
