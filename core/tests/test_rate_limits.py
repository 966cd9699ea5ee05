"""Limits per service on the fake engines: requests and tokens per minute and concurrency,
429s in OpenAI's shape with Retry-After, x-ratelimit headers on every response, other services
untouched, and windows shared by hosts on one Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.errors import PluginError
from mlx_host.host import Host
from mlx_host.settings import Settings
from mlx_host.testing import RunningServer, run_server

GAMMA = ServiceSpec(
    name="gamma",
    key_prefix="gamma_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(max_tokens=64, limits={"requests_per_minute": 1000}),
)


def chat(server: RunningServer, service: str = "alpha", **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    body = {"messages": [{"role": "user", "content": "hello there"}], **body}
    return httpx.post(f"{server.api_url}/chat/completions", json=body, headers=headers, timeout=60)


@pytest.fixture
def limited(request: pytest.FixtureRequest, mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"service_limits": {"alpha": request.param}}
    pm = plugin_manager(ALPHA, GAMMA)
    with run_server(settings, pm, mlx_host_cache_dir, fake=True) as server:
        yield server


@pytest.mark.parametrize("limited", [{"requests_per_minute": 3}], indirect=True)
def test_requests_per_minute(limited: RunningServer) -> None:
    answers = [chat(limited) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = chat(limited, "gamma")  # its own limits
    assert other.status_code == 200 and other.headers["x-ratelimit-limit-requests"] == "1000"


@pytest.mark.parametrize("limited", [{"tokens_per_minute": 50}], indirect=True)
def test_tokens_per_minute(limited: RunningServer) -> None:
    first = chat(limited)  # the fake's prompt is its messages as JSON: over 40 tokens
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "50"
    assert first.json()["usage"]["total_tokens"] > 50
    # Its tokens are counted once its response has been sent: then the minute is spent.
    deadline = time.monotonic() + 10
    while (second := chat(limited)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert second.status_code == 429, second.text
    assert "tokens per minute" in second.json()["error"]["message"]
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"


@pytest.mark.parametrize("limited", [{"concurrent_requests": 1}], indirect=True)
def test_concurrent_requests(limited: RunningServer) -> None:
    assert limited.fake is not None
    with limited.fake.hold(), ThreadPoolExecutor(1) as pool:
        running = pool.submit(chat, limited, stream=True)
        # Wait until the held request runs, then a second one is over the limit.
        for _ in range(500):
            if limited.fake.requests:
                break
            time.sleep(0.01)
        second = chat(limited)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
        limited.fake.release()
        assert running.result().status_code == 200
    assert chat(limited).status_code == 200  # the slot came back


def test_windows_are_shared_through_redis(redis_url: str, mlx_host_cache_dir: Path) -> None:
    settings = {"session_backend": "redis", "redis_url": redis_url,
                "service_limits": {"alpha": {"requests_per_minute": 2}}}  # fmt: skip
    with (
        run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as one,
        run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as two,
    ):
        assert chat(one).status_code == 200
        assert chat(two).status_code == 200
        assert chat(one).status_code == 429 and chat(two).status_code == 429


def test_limits_for_unknown_services_stop_the_start(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, service_limits={"nope": {"requests_per_minute": 1}},
        keys_file=tmp_path / "k.json",
    )  # fmt: skip
    with pytest.raises(PluginError, match="nope"):
        Host.build(settings, plugin_manager(ALPHA))
