"""Matrix products padded to faster row counts: the plan from measured times (pure logic), and
models whose layers are swapped give the same results as before (a small random llama,
in-process)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models import llama

from mlx_host.engine import row_padding
from mlx_host.engine.row_padding import (
    PaddedEmbedding,
    PaddedLinear,
    RowPlan,
    padding_plan,
    plan_row_padding,
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


def test_plan_takes_the_fastest_and_then_the_smallest() -> None:
    assert padding_plan({1: 10, 2: 20, 4: 5, 8: 5})[2] == 4
    assert padding_plan({1: 10, 2: 20, 4: 6, 8: 5})[2] == 8


@pytest.mark.parametrize("shape", [(3, 64), (3, 1, 64), (1, 3, 64)])
def test_padded_product_is_the_plain_product(shape: tuple[int, ...]) -> None:
    mx.random.seed(1)
    layer = nn.Linear(64, 48, bias=True)
    x = mx.random.normal(shape)
    padded = row_padding._padded(layer, RowPlan({3: 16}))
    assert isinstance(padded, PaddedLinear)
    assert padded.weight is layer.weight and padded.bias is layer.bias
    out = padded(x)
    assert out.shape == (*shape[:-1], 48)
    assert mx.allclose(out, layer(x), atol=1e-5)
    assert mx.allclose(padded(x[..., :2, :]), layer(x[..., :2, :]), atol=1e-6)  # not planned


def random_llama(tied: bool, quantized: bool = False) -> Any:
    mx.random.seed(7)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=300,
        tie_word_embeddings=tied,
    )  # fmt: skip
    net = llama.Model(args)
    if quantized:
        nn.quantize(net, group_size=32, bits=8)
    mx.eval(net.parameters())
    return net


def logits(net: Any, batch: int, positions: int) -> mx.array:
    tokens = mx.array([[3 + i + 40 * j for j in range(positions)] for i in range(batch)])
    return net(tokens)


def timed(costs: dict[int, float]) -> Any:
    """A stand-in for ``time_rows``: ``costs`` at the row counts asked for."""
    return lambda weights, rows: {n: costs[n] for n in rows}


@pytest.mark.parametrize("tied", [True, False])
def test_a_planned_model_computes_what_it_did(monkeypatch: pytest.MonkeyPatch, tied: bool) -> None:
    costs = {1: 10, 2: 11, 3: 12, 4: 5, 6: 11, 8: 9, 12: 9, 16: 9, 24: 1}
    monkeypatch.setattr(row_padding, "time_rows", timed(costs))
    net, before = random_llama(tied), random_llama(tied)
    assert plan_row_padding(net, max_rows=3) == {1: 4, 2: 4, 3: 4}

    head = net.model.embed_tokens if tied else net.lm_head
    assert isinstance(head, PaddedEmbedding if tied else PaddedLinear)
    assert isinstance(net.model.layers[1].mlp.down_proj, PaddedLinear)
    assert isinstance(net.model.layers[0].self_attn.q_proj, PaddedLinear)
    assert dict(net.model.layers[0].self_attn.q_proj.rows.padded) == {1: 4, 2: 4, 3: 4}
    # A product's rows are the batch's rows times positions: 1 x 2, 3 x 1 and 1 x 3 are
    # padded, 3 x 2 and 5 x 1 are not.
    for batch, positions in [(1, 2), (3, 1), (1, 3), (3, 2), (5, 1)]:
        padded, plain = logits(net, batch, positions), logits(before, batch, positions)
        assert mx.allclose(padded, plain, atol=1e-5)
    assert net.parameters().keys() == before.parameters().keys()


def test_nothing_is_swapped_without_a_gain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed({1: 1, 2: 2, 3: 3, 4: 4}))
    net = random_llama(tied=False)
    assert plan_row_padding(net, max_rows=2) == {}
    assert type(net.lm_head) is nn.Linear


def test_quantized_layers_keep_their_own_product(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed({1: 10, 2: 10, 3: 10, 4: 5}))
    net = random_llama(tied=False, quantized=True)
    assert plan_row_padding(net, max_rows=4) == {}  # nothing of float type to time
    assert isinstance(net.lm_head, nn.QuantizedLinear)


def test_a_full_batch_may_be_padded_beyond_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_padding, "time_rows", timed(HASWELL | {3: 40, 6: 44}))
    # 8 rows at most: 16 is timed, 24 is not (nor planned for), and the plan stops at 8.
    assert plan_row_padding(random_llama(tied=True), max_rows=8) == {n: 16 for n in range(4, 9)}


def test_timing_covers_each_row_count_asked() -> None:
    weights = [mx.ones((32, 16)), mx.ones((16, 32))]
    costs = time_rows(weights, [1, 4, 16])
    assert costs.keys() == {1, 4, 16} and all(t > 0 for t in costs.values())
