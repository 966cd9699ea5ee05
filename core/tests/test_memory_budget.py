"""The budget's arithmetic: claims never overrun it, and the batch bound covers mlx-lm's
padding of every row to the longest one."""

from __future__ import annotations

import threading

from mlx_host.engine.scheduler import kv_bound
from mlx_host.models.memory import KVClaim, MemoryBudget


def test_claims_and_reservations_fit_within_the_budget_beside_what_is_held() -> None:
    held = 600
    budget = MemoryBudget(1000, held=lambda: held)
    first, second = budget.claim("a"), budget.claim("b")
    assert first.resize(300)
    assert not second.resize(200)  # 600 held + 300 + 200 > 1000
    assert second.nbytes == 0 and budget.claimed_bytes == 300
    assert second.worth_waiting(200)  # the other model's requests give memory back
    assert second.resize(100) and budget.committed_bytes() == 1000
    first.resize(50)  # shrinking always succeeds
    assert not budget.reserve("c", 300)  # a load must fit too: 600 + 150 + 300 > 1000
    assert budget.reserve("c", 250) and budget.reservations() == {"c": 250}
    assert not second.resize(101)  # the reservation counts
    budget.release("c")
    first.release()
    assert budget.peak_claimed_bytes == 400


def test_waiting_is_worth_it_only_if_memory_may_come_back() -> None:
    budget = MemoryBudget(100, held=lambda: 100)
    alone = budget.claim("a")
    assert not alone.worth_waiting(10)  # nothing runs, nothing loads, nothing can go
    asked: list[tuple[int, str]] = []
    budget.relieve = lambda nbytes, owner: asked.append((nbytes, owner)) or True
    assert alone.worth_waiting(10) and asked == [(10, "a")]


def test_concurrent_claims_never_overrun() -> None:
    budget = MemoryBudget(10_000, held=lambda: 0)
    claims = [budget.claim(str(i)) for i in range(8)]

    def grow(claim: KVClaim) -> None:
        for step in range(1, 200):
            claim.resize(100 * step)  # each wants 19,900: far more than all may have

    threads = [threading.Thread(target=grow, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.claimed_bytes == sum(c.nbytes for c in claims)
    assert 9_900 < budget.claimed_bytes <= 10_000
    assert budget.peak_claimed_bytes <= 10_000


def test_a_batch_is_bounded_by_its_longest_row_in_whole_blocks() -> None:
    assert kv_bound([], 10) == 0
    assert kv_bound([1], 10) == 256 * 10
    assert kv_bound([100, 300, 20], 10) == 3 * 512 * 10
