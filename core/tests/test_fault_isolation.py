"""A failure inside one request, or a dying worker, never takes other requests or services
down, and shutting down never hangs."""

from __future__ import annotations

import ctypes
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, held_after_first_token, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

OMEGA = ServiceSpec(
    name="omega",
    key_prefix="omega_",
    chat_model="smollm2-135m-instruct",
    completion_model="smollm2-135m-instruct",
    policy=ServicePolicy(temperature=0.0, max_tokens=8),
)
ASK = [{"role": "user", "content": "Name a river."}]


def chat(server: RunningServer, service: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.keys[service]}"},
        json={"messages": ASK, "max_tokens": 4, **body},
        timeout=120,
    )


def health(server: RunningServer) -> dict:
    return httpx.get(f"{server.url}/v1/health").json()


def scheduler(server: RunningServer):
    (model,) = server.app.state.host.models.loaded()
    return model.engine.scheduler


@pytest.fixture(scope="module")
def shared(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    """Two services sharing one model, which is loaded before each test."""
    with run_server({}, plugin_manager(ALPHA, OMEGA), mlx_host_cache_dir) as server:
        yield server


@pytest.fixture
def server(shared: RunningServer) -> RunningServer:
    assert chat(shared, "omega").status_code == 200
    return shared


def test_a_failed_step_fails_its_batch_only(server: RunningServer) -> None:
    engine = scheduler(server)

    def broken_step() -> None:
        raise RuntimeError("injected failure at 0xdeadbeef")

    engine._generator.next = broken_step  # the generator that replaces it has no such patch
    failed = chat(server, "alpha")
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    assert error["code"] == "generation_failed" and error["type"] == "server_error"
    assert "deadbeef" not in failed.text and "RuntimeError" not in failed.text
    assert chat(server, "omega").status_code == 200
    assert chat(server, "alpha").status_code == 200
    assert health(server)["status"] == "ok"


def kill(thread: threading.Thread) -> None:
    """Raise SystemExit inside ``thread`` wherever it is (as an unexpected crash would)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit)
    )
    assert done == 1


def test_a_killed_worker_is_reported_and_restarted(server: RunningServer) -> None:
    host = server.app.state.host
    restarts = host.models.restarts
    engine = scheduler(server)
    body = {"messages": ASK, "max_tokens": 200, "stream": True}
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    with (
        held_after_first_token(server) as release,
        httpx.stream(
            "POST", f"{server.api_url}/chat/completions", headers=headers, json=body, timeout=60
        ) as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
        kill(engine._thread)  # raised as soon as the held worker runs Python again
        release()
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "model_failed"
    assert engine.active_requests == 0
    report = health(server)
    assert report["status"] == "degraded"
    assert report["failed_models"] == ["smollm2-135m-instruct"]
    # The next request, from another service, restarts the model and is answered.
    assert chat(server, "omega").status_code == 200
    assert host.models.restarts == restarts + 1
    assert health(server)["status"] == "ok"


def test_shutdown_is_bounded_when_a_worker_is_stuck(mlx_host_cache_dir: Path) -> None:
    release = threading.Event()
    settings = {"shutdown_timeout_seconds": 1}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir) as server:
        assert chat(server, "alpha").status_code == 200
        engine = scheduler(server)
        engine._generator.next = release.wait  # stuck inside a step, for as long as we like
        outcome: list[object] = []

        def stuck_client() -> None:
            try:
                outcome.append(chat(server, "alpha").status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        client = threading.Thread(target=stuck_client)
        client.start()
        deadline = time.monotonic() + 30
        while engine.running_requests == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stopping = time.monotonic()
    try:
        elapsed = time.monotonic() - stopping
        # Graceful period, then each model's worker gets the same time to stop.
        assert elapsed < 15, f"shutdown took {elapsed:.1f} s"
        client.join(timeout=30)
        assert outcome and outcome[0] != 200
    finally:
        release.set()
