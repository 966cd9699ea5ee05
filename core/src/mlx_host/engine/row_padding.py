"""Matrix products padded to the row counts the CPU's BLAS is fastest at, planned at load.

A decoding step multiplies every weight matrix by one row per sequence in the batch. How long
the BLAS takes is far from monotone in that row count: with Debian's OpenBLAS on the 2-core CI
machine (Haswell kernels), the model's linear layers take 45 ms for 8 rows and 36 ms for 16,
and 67 ms for 12 (docs/engine.md). Other kernels (OpenBLAS's AVX-512 ones, MKL, Accelerate)
have other shapes, so nothing here is a fixed rule: when a model loads on the CPU,
``plan_row_padding`` times its own float32 weights at a few row counts, and every row count
that a larger one beats by more than 10% is padded to it (with zero rows, dropped again after
the product). Each row is still the product of its own input, up to the BLAS's rounding.
Other weight types do not go through the BLAS and are left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from mlx_host.engine import memory

#: The row counts timed: small batches one by one, then steps of a quarter, up to twice the
#: batch's limit (a full batch may gain from more rows). Row counts in between are padded to
#: one of them or left alone (``padding_plan``).
CANDIDATE_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: A larger row count is used only if it takes less than this share of the time, so that
#: timing noise does not pad rows for nothing.
MAX_TIME_SHARE = 0.9
#: Weights timed per row count: enough to leave the caches, as decoding does, and few enough
#: that timing takes about a second. A model whose weights are each over half of this is not
#: planned (timing it would take too long at load) and keeps the BLAS's own row counts.
SAMPLE_BYTES = 128 * 1024**2
#: Timed rounds over all the row counts (the fastest round counts), after one warm-up round.
REPEATS = 4


def padding_plan(costs: Mapping[int, float], share: float = MAX_TIME_SHARE) -> dict[int, int]:
    """Rows to pad each row count to, from the time of a product at some row counts (which
    must include 1 row).

    A measured row count ``n`` is padded to the fastest measured ``p > n`` (the smaller one of
    a tie) when ``p`` takes less than ``share`` of ``n``'s time. A row count between two
    measured ones is compared with the one below it (the larger one's time is no bound: it
    may be the slow one). Row counts left as they are, and any above the largest measured,
    are absent."""
    if 1 not in costs:
        return {}
    measured = sorted(costs)
    plan: dict[int, int] = {}
    for n in range(1, measured[-1] + 1):
        floor = max(m for m in measured if m <= n)
        best = min((m for m in measured if m >= n), key=lambda m: (costs[m], m))
        if best > n and costs[best] < share * costs[floor]:
            plan[n] = best
    return plan


def sample(weights: list[mx.array], budget: int = SAMPLE_BYTES) -> list[mx.array]:
    """The first ``budget`` bytes of ``weights``, leaving out any weight over half of it (an
    output layer), so that the sample is whole layers' weights, in the proportions a step
    multiplies them."""
    chosen: list[mx.array] = []
    total = 0
    for w in weights:
        if w.nbytes > budget // 2:
            continue
        if total + w.nbytes > budget:
            break
        chosen.append(w)
        total += w.nbytes
    return chosen


def time_rows(weights: list[mx.array], rows: Iterable[int]) -> dict[int, float]:
    """Seconds for ``x @ w.T`` over every weight, by rows: the fastest of ``REPEATS`` rounds,
    each over every row count in turn, so that a slow moment is shared out."""
    rows = list(rows)
    widths = {w.shape[1] for w in weights}
    inputs = {(n, k): mx.ones((n, k), mx.float32) for n in rows for k in widths}
    mx.eval(list(inputs.values()))
    runs: dict[int, list[float]] = {n: [] for n in rows}
    for _ in range(REPEATS + 1):
        for n in rows:
            t0 = time.perf_counter()
            mx.eval([inputs[n, w.shape[1]] @ w.T for w in weights])
            runs[n].append(time.perf_counter() - t0)
    memory.release_unused()
    return {n: min(times[1:]) for n, times in runs.items()}


@dataclass
class RowPlan:
    """Row count → the row count its products are padded to (absent: left as it is)."""

    padded: Mapping[int, int]

    def product(
        self, x: mx.array, weight: mx.array, bias: mx.array | None = None
    ) -> mx.array | None:
        """``x @ weight.T`` (``+ bias``) from rows padded as planned, in ``x``'s shape; None
        when ``x``'s row count is not planned (the layer's own product is then as fast)."""
        n = x.size // x.shape[-1] if x.ndim else 0
        to = self.padded.get(n)
        if to is None:
            return None
        rows = self.pad(x, to)
        y = rows @ weight.T if bias is None else mx.addmm(bias, rows, weight.T)
        return y[:n].reshape(*x.shape[:-1], weight.shape[0])

    def pad(self, x: mx.array, to: int) -> mx.array:
        """``x`` as a matrix of ``to`` rows, the extra ones zero."""
        rows = x.reshape(-1, x.shape[-1])
        return mx.pad(rows, [(0, to - rows.shape[0]), (0, 0)])


class PaddedLinear(nn.Linear):
    """An ``nn.Linear`` whose product pads its rows as planned."""

    plan: RowPlan

    def __call__(self, x: mx.array) -> mx.array:
        """The layer's output; for a planned row count, from a padded product."""
        y = self.plan.product(x, self["weight"], self.get("bias"))
        return super().__call__(x) if y is None else y


class PaddedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose use as a tied output layer pads its rows as planned."""

    plan: RowPlan

    def as_linear(self, x: mx.array) -> mx.array:
        """The tied output layer's logits; for a planned row count, from a padded product."""
        y = self.plan.product(x, self.weight)
        return super().as_linear(x) if y is None else y


_PADDED: dict[type, type[PaddedLinear] | type[PaddedEmbedding]] = {
    nn.Linear: PaddedLinear,
    nn.Embedding: PaddedEmbedding,
}


def plan_row_padding(model: nn.Module, max_rows: int) -> dict[int, int]:
    """Time ``model``'s own float32 weights at the candidate row counts for products of up to
    ``max_rows`` rows, and make its linear layers (and embeddings, whose output product a
    tied model uses) pad as planned.

    Call once, right after the model loads on the CPU and before it runs. Returns the plan
    (row count → padded row count); empty when no row count gains, and then no layer
    changes."""
    # Exact types: a quantized or otherwise specialized layer has its own product.
    layers = [
        m for _, m in model.named_modules() if type(m) in _PADDED and m.weight.dtype == mx.float32
    ]
    weights = sample([m.weight for m in layers])
    if not weights or max_rows < 1:
        return {}
    costs = time_rows(weights, [n for n in CANDIDATE_ROWS if n <= 2 * max_rows])
    plan = {n: p for n, p in padding_plan(costs).items() if n <= max_rows}
    if plan:
        rows = RowPlan(plan)
        for m in layers:
            # The same module, parameters and state (eval mode, frozen parameters), with the
            # padded product: a new module would need its parameters copied and every path
            # that holds it updated.
            m.__class__ = _PADDED[type(m)]
            m.plan = rows
    return plan
