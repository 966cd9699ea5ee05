"""Matrix products padded to the row counts the CPU's BLAS is fastest at, planned at load.

A decoding step multiplies every weight matrix by one row per sequence in the batch. How long
the BLAS takes is far from monotone in that row count: with Debian's OpenBLAS on the 2-core CI
machine (Haswell kernels), the model's linear layers take 45 ms for 8 rows and 36 ms for 16,
and 67 ms for 12 (docs/engine.md). Other kernels (OpenBLAS's AVX-512 ones, MKL, Accelerate)
have other shapes, so nothing here is a fixed rule: when a model loads on the CPU,
``plan_row_padding`` times its own weights at a few row counts, and every row count that a
larger one beats is padded to it (with zero rows, dropped again after the product). Each row
is still the product of its own input, up to the BLAS's rounding.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

#: The row counts timed: small batches one by one, then steps of a quarter, up to twice the
#: batch's limit (a full batch may gain from more rows). Row counts in between are padded to
#: one of them or left alone (``padding_plan``).
CANDIDATE_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: A larger row count is used only if it takes at most this share of the time, so that timing
#: noise does not pad rows for nothing.
MAX_TIME_SHARE = 0.9
#: Weights timed per row count: enough to leave the caches, as decoding does, and few enough
#: that a large model's plan still takes seconds.
SAMPLE_BYTES = 512 * 1024**2
#: Timed runs per row count (the fastest counts), after one warm-up.
REPEATS = 2


def padding_plan(costs: Mapping[int, float], share: float = MAX_TIME_SHARE) -> dict[int, int]:
    """Rows to pad each row count to, from the time of a product at some row counts.

    A measured row count ``n`` is padded to the fastest measured ``p > n`` when ``p`` takes less
    than ``share`` of ``n``'s time. A row count between two measured ones is compared with the
    one below it (the larger one's time is no bound: it may be the slow one). Row counts left
    as they are, and any above the largest measured, are absent."""
    measured = sorted(costs)
    plan: dict[int, int] = {}
    for n in range(1, measured[-1] + 1):
        floor = max(m for m in measured if m <= n)
        best = min((m for m in measured if m >= n), key=lambda m: (costs[m], m))
        if best > n and costs[best] < share * costs[floor]:
            plan[n] = best
    return plan


def _sample(weights: Iterable[mx.array]) -> list[mx.array]:
    sample: list[mx.array] = []
    total = 0
    for w in weights:
        if sample and total + w.nbytes > SAMPLE_BYTES:
            break
        sample.append(w)
        total += w.nbytes
    return sample


def time_rows(weights: list[mx.array], rows: Iterable[int]) -> dict[int, float]:
    """Seconds for ``x @ w.T`` over every weight, the fastest of ``REPEATS`` runs, by rows."""
    costs: dict[int, float] = {}
    for n in rows:
        inputs = {w.shape[1]: mx.ones((n, w.shape[1]), w.dtype) for w in weights}
        mx.eval(list(inputs.values()))
        runs = []
        for _ in range(REPEATS + 1):
            t0 = time.perf_counter()
            mx.eval([inputs[w.shape[1]] @ w.T for w in weights])
            runs.append(time.perf_counter() - t0)
        costs[n] = min(runs[1:])
    return costs


@dataclass(frozen=True)
class RowPlan:
    """Row count → the row count its products are padded to (absent: left as it is)."""

    padded: Mapping[int, int]

    def product(self, x: mx.array, weight: mx.array) -> mx.array:
        """``x @ weight.T``, its rows padded as planned."""
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        to = self.padded.get(n)
        if to is None:
            return x @ weight.T
        rows = mx.pad(rows, [(0, to - n), (0, 0)])
        return (rows @ weight.T)[:n].reshape(*x.shape[:-1], weight.shape[0])


class PaddedLinear(nn.Linear):
    """An ``nn.Linear`` whose product pads its rows as planned."""

    rows: RowPlan

    def __call__(self, x: mx.array) -> mx.array:
        y = self.rows.product(x, self["weight"])
        return y + self["bias"] if "bias" in self else y


class PaddedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose use as a tied output layer pads its rows as planned."""

    rows: RowPlan

    def as_linear(self, x: mx.array) -> mx.array:
        return self.rows.product(x, self.weight)


_PADDED: dict[type, type[PaddedLinear] | type[PaddedEmbedding]] = {
    nn.Linear: PaddedLinear,
    nn.Embedding: PaddedEmbedding,
}


def _padded(module: nn.Module, rows: RowPlan) -> nn.Module:
    """The same parameters in the padded class (``__init__`` would draw new random ones)."""
    kind = _PADDED[type(module)]
    padded = kind.__new__(kind)
    nn.Module.__init__(padded)
    for key, value in module.items():
        padded[key] = value
    padded.rows = rows
    return padded


def plan_row_padding(model: nn.Module, max_rows: int) -> dict[int, int]:
    """Time ``model``'s own float weights at the candidate row counts for products of up to
    ``max_rows`` rows, and swap its linear layers (and embeddings, whose output product a
    tied model uses) for padded ones.

    Call once, right after the model loads on the CPU and before it runs. Returns the plan
    (row count → padded row count); empty when no row count gains, and then nothing is
    swapped."""
    # Exact types: a quantized or otherwise specialized layer has its own product.
    layers = [
        (path, m)
        for path, m in model.named_modules()
        if type(m) in _PADDED and mx.issubdtype(m.weight.dtype, mx.floating)
    ]
    if not layers:
        return {}
    candidates = [n for n in CANDIDATE_ROWS if n <= 2 * max_rows]
    costs = time_rows(_sample(m.weight for _, m in layers), candidates)
    plan = {n: p for n, p in padding_plan(costs).items() if n <= max_rows}
    if plan:
        rows = RowPlan(plan)
        model.update_modules(tree_unflatten([(path, _padded(m, rows)) for path, m in layers]))
    return plan
