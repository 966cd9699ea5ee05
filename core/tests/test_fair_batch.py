"""Services share a model's batch: one service's flood gets 429s once it holds its share of the
places, another service is still admitted, and the next free row goes to the service with
work waiting and fewer rows, not to the flood queued ahead of it (real SmolLM2, a batch of 2
rows and 2 queue places)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ALPHA, held_after_first_token, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

GAMMA = ServiceSpec(
    name="gamma",
    key_prefix="gamma_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(temperature=0.0, max_tokens=8),
)


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"max_batch_size": 2, "max_queued_requests": 2}
    with run_server(settings, plugin_manager(ALPHA, GAMMA), mlx_host_cache_dir) as running:
        yield running


def stream(server: RunningServer, service: str, i: int) -> int:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Count to {i}."}],
        "max_tokens": 8, "stream": True,
    }  # fmt: skip
    with httpx.stream(
        "POST", f"{server.api_url}/chat/completions", json=body, headers=headers, timeout=120
    ) as response:
        for _ in response.iter_lines():
            pass
        return response.status_code


def metrics(server: RunningServer) -> str:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    return httpx.get(f"{server.url}/metrics", headers=headers).text


def wait_for(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_flood_cannot_lock_another_service_out(server: RunningServer) -> None:
    stream(server, "alpha", 0)  # loaded, and its batch running
    scheduler = server.app.state.host.models.loaded()[0].engine.scheduler
    # Each request started, with the services whose requests were still waiting then and
    # each service's rows in the batch.
    started: list[tuple[str, set[str], Counter[str]]] = []
    insert = scheduler._insert

    def recording_insert(job: Any) -> None:
        rows = Counter(j.service for j in scheduler._jobs.values())
        started.append((job.service, {j.service for j in scheduler._waiting}, rows))
        insert(job)

    scheduler._insert = recording_insert
    try:
        with held_after_first_token(server) as release, ThreadPoolExecutor(8) as pool:
            flood = [pool.submit(stream, server, "alpha", i) for i in range(6)]
            # Two run, two queue (the model's 4 places), two are refused at once.
            wait_for(lambda: sum(f.done() for f in flood) == 2)
            assert sorted(f.result() for f in flood if f.done()) == [429, 429]
            wait_for(lambda: scheduler.active_requests == 4)
            # What waits, and why, as /metrics says it.
            wait_for(lambda: 'waiting_for="batch_row"} 2.0' in metrics(server))
            other = pool.submit(stream, server, "gamma", 0)  # under its share: admitted
            wait_for(lambda: scheduler.active_requests == 5)
            release()
            assert other.result() == 200
            assert [f.result() for f in flood if f.result() != 429] == [200] * 4
    finally:
        del scheduler._insert
    text = metrics(server)
    assert (
        'mlx_host_refused_requests_total{model="smollm2-135m-instruct",reason="queue_full"} 2.0'
        in text
    )
    started_count = (
        f'mlx_host_queue_wait_seconds_count{{model="smollm2-135m-instruct"}} {len(started) + 1}.0'
    )
    assert started_count in text  # the first request, and every one recorded here
    # While gamma's request waited, an alpha request started only if alpha had no more rows
    # than gamma (equal weights): never did alpha's queue take a row that was gamma's share.
    assert [s for s, _, _ in started].count("gamma") == 1, started
    for service, waiting, rows in started:
        if service == "alpha" and "gamma" in waiting:
            assert rows["alpha"] <= rows["gamma"], started
