"""Matrix products padded to faster row counts: the plan from measured times (pure logic), and
models whose layers are swapped give the same results as before (a small random llama,
in-process)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from mlx_host.engine import memory, row_padding
from mlx_host.engine.random_model import random_llama
from mlx_host.engine.row_padding import (
    PaddedEmbedding,
    PaddedLinear,
    RowPlan,
    padding_plan,
    plan_row_padding,
    sample,
    time_rows,
)

#: Milliseconds for the linear layers of SmolLM2-135M by rows, as timed on the 2-core CI
#: machine with OpenBLAS's Haswell kernels (docs/engine.md).
HASWELL = {1: 27, 2: 32, 4: 42, 8: 45, 12: 66, 16: 36, 24: 61, 32: 52}


def test_plan_pads_each_row_count_that_a_larger_one_beats() -> None:
    plan = padding_plan(HASWELL)
    assert plan == {n: 16 for n in range(4, 16)} | {n: 32 for n in range(24, 32)}


def test_plan_compares_unmeasured_rows_with_the_measured_count_below() -> None:
    # 3 rows are not timed: 2 rows' 32 ms is their estimate, and 16 rows' 36 ms do not beat
    # it. 17-23 rows: 32 rows' 52 ms do not beat 16 rows' 36.
    plan = padding_plan(HASWELL)
    assert 3 not in plan and not any(n in plan for n in range(17, 24))


def test_plan_needs_a_clear_gain() -> None:
    assert padding_plan({1: 10, 2: 10.5, 4: 9.6}) == {}  # 9.6 is not under 90% of 10.5
    assert padding_plan({1: 10, 2: 10.5, 4: 9.4}) == {2: 4, 3: 4}
    assert padding_plan({1: 1, 2: 2, 4: 4, 8: 8}) == {}  # times that grow with rows


def test_plan_needs_one_row_timed() -> None:
    assert padding_plan({}) == {} and padding_plan({2: 1.0, 4: 0.5}) == {}


def test_plan_takes_the_fastest_and_then_the_smallest() -> None:
    assert padding_plan({1: 10, 2: 20, 4: 5, 8: 5})[2] == 4
    assert padding_plan({1: 10, 2: 20, 4: 6, 8: 5})[2] == 8


@pytest.fixture
def pads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Each padding done, as (rows, padded rows)."""
    done: list[tuple[int, int]] = []
    plain = RowPlan.pad

    def pad(self: RowPlan, x: mx.array, to: int) -> mx.array:
        padded = plain(self, x, to)
        done.append((x.size // x.shape[-1], padded.shape[0]))
        return padded

    monkeypatch.setattr(RowPlan, "pad", pad)
    return done


def swapped(layer: nn.Module, plan: dict[int, int]) -> Any:
    """``layer`` made to pad as ``plan`` says (as ``plan_row_padding`` does)."""
    layer.__class__ = row_padding._PADDED[type(layer)]
    layer.plan = RowPlan(plan)
    return layer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(64,), (3, 64), (3, 1, 64), (1, 3, 64), (3, 1, 1, 64)])
def test_padded_product_is_the_plain_product(
    pads: list[tuple[int, int]], shape: tuple[int, ...], bias: bool
) -> None:
    mx.random.seed(1)
    plain = nn.Linear(64, 48, bias=bias)
    layer = swapped(nn.Linear(64, 48, bias=bias), {1: 4, 3: 16})
    layer.update(plain.parameters())
    x = mx.random.normal(shape)
    out = layer(x)
    rows = x.size // 64
    assert pads == [(rows, {1: 4, 3: 16}[rows])]
    assert out.shape == (*shape[:-1], 48)
    assert mx.allclose(out, plain(x), atol=1e-5)
    two = mx.random.normal((2, 64))
    assert mx.allclose(layer(two), plain(two), atol=1e-6) and len(pads) == 1  # not planned


def test_padded_output_layer_is_the_plain_one(pads: list[tuple[int, int]]) -> None:
    mx.random.seed(2)
    plain = nn.Embedding(300, 64)
    table = swapped(nn.Embedding(300, 64), {3: 8})
    table.update(plain.parameters())
    x = mx.random.normal((3, 1, 64))
    assert mx.allclose(table.as_linear(x), plain.as_linear(x), atol=1e-5)
    assert pads == [(3, 8)]
    tokens = mx.array([[1, 2, 3]])
    assert mx.array_equal(table(tokens), plain(tokens))  # a lookup is a lookup


def small_llama(tied: bool, quantized: bool = False) -> Any:
    """A small random llama; ``quantized``: all but its MLPs' down projections."""
    net = random_llama(7, tied=tied)
    if quantized:
        nn.quantize(
            net,
            group_size=32,
            bits=8,
            class_predicate=lambda p, m: hasattr(m, "to_quantized") and not p.endswith("down_proj"),
        )
    return net


def logits(net: Any, batch: int, positions: int) -> mx.array:
    tokens = mx.array([[3 + i + 40 * j for j in range(positions)] for i in range(batch)])
    return net(tokens)


def timed(costs: Mapping[int, float], asked: list[int] | None = None) -> Any:
    """A stand-in for ``time_rows``: ``costs`` at the row counts asked for (kept in
    ``asked``)."""

    def time_rows(weights: list[mx.array], rows: list[int]) -> dict[int, float]:
        if asked is not None:
            asked.extend(rows)
        return {n: costs[n] for n in rows}

    return time_rows


@pytest.mark.parametrize("tied", [True, False])
def test_a_planned_model_computes_what_it_did(
    monkeypatch: pytest.MonkeyPatch, pads: list[tuple[int, int]], tied: bool
) -> None:
    costs = {1: 10, 2: 11, 3: 12, 4: 5, 6: 11, 8: 9, 12: 9, 16: 9, 24: 1}
    monkeypatch.setattr(row_padding, "time_rows", timed(costs))
    net, before = small_llama(tied), small_llama(tied)
    arrays = dict(tree_flatten(net.parameters()))
    assert plan_row_padding(net, max_rows=3) == {1: 4, 2: 4, 3: 4}

    head = net.model.embed_tokens if tied else net.lm_head
    assert isinstance(head, PaddedEmbedding if tied else PaddedLinear)
    assert isinstance(net.model.layers[1].mlp.down_proj, PaddedLinear)
    assert isinstance(net.model.layers[0].self_attn.q_proj, PaddedLinear)
    assert dict(net.model.layers[0].self_attn.q_proj.plan.padded) == {1: 4, 2: 4, 3: 4}
    assert not net.model.layers[0].self_attn.q_proj.training  # still in eval mode
    # The same arrays, none copied.
    after = dict(tree_flatten(net.parameters()))
    assert after.keys() == arrays.keys() and all(after[k] is arrays[k] for k in arrays)
    assert memory.parameter_bytes(net) == memory.parameter_bytes(before)
    # A product's rows are the batch's rows times positions: 1 x 2, 3 x 1 and 1 x 3 are
    # padded, 3 x 2 and 5 x 1 are not.
    for batch, positions in [(1, 2), (3, 1), (1, 3), (3, 2), (5, 1)]:
        pads.clear()
        padded, plain = logits(net, batch, positions), logits(before, batch, positions)
        assert mx.allclose(padded, plain, atol=1e-5)
        rows = batch * positions
        # 7 products a layer, and the output layer.
        assert pads == ([(rows, 4)] * (2 * 7 + 1) if rows <= 3 else [])


def test_nothing_is_swapped_without_a_gain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed({1: 1, 2: 2, 3: 3, 4: 4}))
    net = small_llama(tied=False)
    assert plan_row_padding(net, max_rows=2) == {}
    assert type(net.lm_head) is nn.Linear


def test_quantized_layers_keep_their_own_product(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed({1: 10, 2: 10, 3: 10, 4: 5, 6: 6}))
    net = small_llama(tied=False, quantized=True)
    assert plan_row_padding(net, max_rows=3) == {1: 4, 2: 4, 3: 4}
    assert type(net.lm_head) is nn.QuantizedLinear
    assert type(net.model.layers[0].self_attn.q_proj) is nn.QuantizedLinear
    assert type(net.model.layers[0].mlp.down_proj) is PaddedLinear


def test_only_float32_weights_are_timed_and_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed({1: 10, 2: 10, 3: 10, 4: 5}))
    net = small_llama(tied=True)
    net.set_dtype(mx.float16)
    assert plan_row_padding(net, max_rows=3) == {}  # the BLAS does not run float16 here
    assert type(net.model.embed_tokens) is nn.Embedding


def test_a_full_batch_may_be_padded_beyond_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(row_padding, "time_rows", timed(HASWELL | {3: 40, 6: 44}, asked))
    # 8 rows at most: up to 16 are timed, and the plan stops at 8.
    assert plan_row_padding(small_llama(tied=True), max_rows=8) == {n: 16 for n in range(4, 9)}
    assert asked == [1, 2, 3, 4, 6, 8, 12, 16]


def test_sample_is_whole_layers_within_its_budget() -> None:
    head, a1, b1, a2, b2 = (mx.zeros(shape) for shape in [(100, 10), *[(10, 10), (5, 10)] * 2])
    # 4000, then 400 + 200 bytes a layer: the head is over half of any budget below 8000.
    ids = [id(w) for w in sample([head, a1, b1, a2, b2], 1000)]
    assert ids == [id(a1), id(b1), id(a2)]
    assert len(sample([head, a1, b1, a2, b2], 8000)) == 5


def test_timing_covers_each_row_count_asked() -> None:
    weights = [mx.ones((32, 16)), mx.ones((16, 32))]
    costs = time_rows(weights, [1, 4, 16])
    assert costs.keys() == {1, 4, 16} and all(t > 0 for t in costs.values())
