"""mlx-host's decoding step against mlx-lm's own, in-process, on the same batch.

    uv run python bench/engine_step.py [--levels 1,8,32] [--tokens 64] [--rounds 3]
                                       [--workload write|edit] [--no-row-padding]

Drives mlx-lm's `BatchGenerator` as shipped and the one mlx-host's scheduler builds
(`engine/lean_batch.py`, on a copy of the model whose products are padded as the scheduler
plans them: `engine/row_padding.py`) with the same greedy prompts (`bench/workloads.py`; the
embedded SmolLM2, this device's weight format), rounds interleaved, and prints decode tokens/s
(median of the rounds, prefill excluded) and the ratio. What each engine change gives is
measured here, without HTTP.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from workloads import WORKLOADS

import mlx_host.engine  # noqa: F401  (the BLAS and allocator, before MLX)
from mlx_host.engine import BLAS


def decode_rate(make: Callable[[int], Any], prompts: list[list[int]], tokens: int) -> float:
    """Tokens per second of the decoding steps once every row has its first token."""
    generator = make(len(prompts))
    uids = generator.insert(prompts, max_tokens=[tokens] * len(prompts))
    started: set[int] = set()
    while len(started) < len(uids):  # prefill, and each row's first token
        started |= {r.uid for r in generator.next_generated()}
    count, t0 = 0, time.perf_counter()
    left = set(uids)
    while left:
        for r in generator.next_generated():
            count += 1
            if r.finish_reason is not None:
                left.discard(r.uid)
    rate = count / (time.perf_counter() - t0)
    generator.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,8,32", help="rows in the batch")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per row")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workload", choices=WORKLOADS, default="write", help="the prompts")
    parser.add_argument(
        "--row-padding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mlx-host's model pads matrix products as the scheduler plans at load on the CPU,"
        " with the largest level as max_batch_size (as compare.py sets it)",
    )
    args = parser.parse_args()
    prompt = WORKLOADS[args.workload]

    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    from mlx_host.engine.device import preferred_weight_format
    from mlx_host.engine.lean_batch import LeanBatchGenerator
    from mlx_host.engine.row_padding import plan_row_padding
    from mlx_host.models.sources import prepare
    from mlx_host.models.spec import EMBEDDED_SOURCE
    from mlx_host.settings import get_settings

    fmt = preferred_weight_format("auto")
    path = str(prepare(EMBEDDED_SOURCE, get_settings().cache_dir, fmt))
    model, tokenizer = load(path)[:2]
    ours = load(path)[0]  # the scheduler's own copy, as it loads one
    levels = [int(x) for x in args.levels.split(",")]
    padded = {}
    if args.row_padding and mx.default_device() == mx.cpu:
        padded = plan_row_padding(ours, max(levels))
    # No stop tokens: every row decodes exactly --tokens, in both.
    kinds: dict[str, Callable[[int], Any]] = {
        "mlx-lm step": lambda n: BatchGenerator(model, completion_batch_size=n),
        "mlx-host lean step": lambda n: LeanBatchGenerator(
            lambda uid: False, model=ours, completion_batch_size=n
        ),
    }
    rows = []
    for level in levels:
        prompts = [
            tokenizer.apply_chat_template(prompt(i), add_generation_prompt=True)
            for i in range(level)
        ]
        rates: dict[str, list[float]] = {name: [] for name in kinds}
        for r in range(args.rounds + 1):  # the first round warms up
            for name in list(kinds)[r % 2 :] + list(kinds)[: r % 2]:
                rate = decode_rate(kinds[name], prompts, args.tokens)
                if r:
                    rates[name].append(rate)
        stock, lean = (statistics.median(rates[name]) for name in kinds)
        rows.append((level, stock, lean))

    print(f"\n**{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"SmolLM2-135M-Instruct ({fmt}); BLAS: {BLAS}; {args.tokens} tokens per row, "
          f"greedy; {args.workload} workload; median of {args.rounds} rounds; "
          f"rows padded: {padded or 'none'}**\n")  # fmt: skip
    print("| rows | mlx-lm step tokens/s | mlx-host lean step tokens/s | lean / mlx-lm |")
    print("|---|---|---|---|")
    for level, stock, lean in rows:
        print(f"| {level} | {stock:.1f} | {lean:.1f} | {lean / stock:.2f}x |")


if __name__ == "__main__":
    main()
