"""Embeddings on this machine: sentences per second for a batch of 256 on the embedded
all-MiniLM-L6-v2, through the server and against the same encoder called in-process.

Rows: one request of 256 sentences (float and base64); 256 one-sentence requests from 16
concurrent clients (the engine batches them across requests); and in-process, the MLX encoder
alone in passes of 32 and one sentence at a time (what batching is worth). Not a test:
figures depend on the machine. Usage: ``uv run python bench/embeddings.py [--repeats N]``.
"""

from __future__ import annotations

# First: it loads the optimized BLAS before anything imports mlx (mlx_host.runtime).
import mlx_host.engine  # noqa: F401

# isort: split
import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from mlx_host import ServiceSpec, hookimpl
from mlx_host.engine.bert import Pooling, load_bert
from mlx_host.plugins import PluginManager
from mlx_host.testing import RunningServer, run_server

BENCH = ServiceSpec(name="bench", key_prefix="bench_", embedding_model="all-minilm-l6-v2")
SUBJECTS = ["The doctor", "A small dog", "Our new server", "The river", "My neighbour",
            "The committee", "A tired student", "The old bakery"]  # fmt: skip
VERBS = ["quietly explained", "carefully measured", "suddenly questioned", "happily shared",
         "slowly rebuilt", "never understood", "often visited", "barely noticed"]  # fmt: skip
OBJECTS = ["the results of the morning's blood tests", "a plan for the flooded village",
           "the price of bread in the market", "the rules of an unfamiliar card game"]  # fmt: skip
#: 256 different sentences of 9 to 14 words.
SENTENCES = [
    f"{SUBJECTS[i % 8]} {VERBS[(i // 8) % 8]} {OBJECTS[(i // 64) % 4]}." for i in range(256)
]


class _Bench:
    @hookimpl
    def mlx_host_register_services(self, register):  # type: ignore[no-untyped-def]
        register(BENCH)


def timed(work: Callable[[], object], repeats: int) -> float:
    """Sentences per second of ``work`` (which embeds all 256), median of ``repeats``."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return len(SENTENCES) / statistics.median(seconds)


def one_request(server: RunningServer, encoding: str) -> None:
    reply = server.openai("bench").embeddings.create(
        model="default",
        input=SENTENCES,
        encoding_format=encoding,  # type: ignore[arg-type]
    )
    assert len(reply.data) == len(SENTENCES)


def many_requests(server: RunningServer) -> None:
    client = server.openai("bench")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda s: client.embeddings.create(model="default", input=s), SENTENCES))


def in_process(model_dir: Path, per_pass: int) -> Callable[[], None]:
    """The encoder alone: tokenize, pad each pass to its longest, encode, pool."""
    model, pooling = load_bert(model_dir), Pooling.read(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.no_padding()

    def run() -> None:
        for start in range(0, len(SENTENCES), per_pass):
            ids = [e.ids for e in tokenizer.encode_batch(SENTENCES[start : start + per_pass])]
            longest = max(map(len, ids))
            padded = np.array([x + [0] * (longest - len(x)) for x in ids], np.int32)
            mask = mx.array((padded != 0).astype(np.int32))
            mx.eval(pooling(model(mx.array(padded), mask), mask))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (after a warm-up)")
    args = parser.parse_args()
    pm = PluginManager()
    pm.register(_Bench(), "bench", "bench", "0")
    cache = Path(os.environ.get("MLX_HOST_CACHE_DIR", tempfile.mkdtemp()))
    rows = []
    with run_server({}, pm.load(discover=False), cache) as server:
        one_request(server, "float")  # load the model
        for label, work in [
            ("server: 1 request of 256, float", lambda: one_request(server, "float")),
            ("server: 1 request of 256, base64", lambda: one_request(server, "base64")),
            ("server: 256 requests of 1, 16 clients", lambda: many_requests(server)),
        ]:
            rows.append((label, timed(work, args.repeats)))
    model_dir = next((cache / "models").glob("*-unzipped"))
    for label, per_pass in [("in-process encoder, passes of 32", 32),
                            ("in-process encoder, one at a time", 1)]:  # fmt: skip
        run = in_process(model_dir, per_pass)
        run()  # warm-up
        rows.append((label, timed(run, args.repeats)))
    print(
        f"\n**{platform.machine()}, {os.cpu_count()} cores; all-MiniLM-L6-v2 (float32) on MLX; "
        f"256 sentences of 9-14 words; median of {args.repeats}**\n"
    )
    print("| how | sentences/s |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:.0f} |")


if __name__ == "__main__":
    main()
