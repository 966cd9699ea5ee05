"""Every request leaves one access line and its metrics, and no secret in any log: checked on
the fake engines with known keys and prompts, through the real middleware and /metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host.testing import RunningServer, run_server

SECRET_PROMPT = "my card number is 4111-SECRET-1111"
METRICS_KEY = "metrics-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"metrics_key": METRICS_KEY}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as running:
        yield running


def access_lines(caplog: pytest.LogCaptureFixture, expected: int) -> list[dict]:
    """The access lines, once ``expected`` are written: a line is written after its response
    has been sent, so a client may read the response first."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records
                 if r.name == "mlx_host.access"]  # fmt: skip
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_no_key_prompt_or_answer_reaches_any_log(
    server: RunningServer, fake, caplog: pytest.LogCaptureFixture
) -> None:
    key = server.keys["alpha"]
    caplog.set_level(logging.DEBUG)  # every logger, every level
    client = server.openai("alpha")
    ask = [{"role": "user", "content": SECRET_PROMPT}]
    client.chat.completions.create(model="default", messages=ask)  # the fake echoes it
    for _ in client.chat.completions.create(model="default", messages=ask, stream=True):
        pass
    # A key in the query string, and a wrong key.
    httpx.get(f"{server.api_url}/models?api_key={key}", headers={"Authorization": f"Bearer {key}"})
    httpx.get(f"{server.api_url}/models", headers={"Authorization": "Bearer alpha_WRONG-12345"})
    # The server's logs (the test's own HTTP clients log their URLs; they are not the server).
    server_records = [r for r in caplog.records
                      if not r.name.startswith(("httpx", "httpcore", "openai"))]  # fmt: skip
    logged = "".join(f"{r.getMessage()} {r.args}" for r in server_records)
    for secret in (key, key[len("alpha_") :], "4111-SECRET", "alpha_WRONG-12345", "api_key="):
        assert secret not in logged, secret
    lines = access_lines(caplog, 4)
    assert len(lines) == 4
    # Matched by what they are, not by order: a stream's line comes after its cleanup.
    chat, streamed = sorted(
        (line for line in lines if line["route"] == "/v1/chat/completions"),
        key=lambda line: "first_token_ms" in line,
    )
    (models,) = [line for line in lines if line["route"] == "/v1/models" and line["status"] == 200]
    (refused,) = [line for line in lines if line["status"] == 401]
    for line in (chat, streamed):
        assert line["service"] == "alpha" and line["model"] == "smollm2-135m-instruct"
        assert line["route"] == "/v1/chat/completions" and line["status"] == 200
        assert line["completion_tokens"] == len(SECRET_PROMPT) and line["prompt_tokens"] > 0
    assert "first_token_ms" in streamed and "first_token_ms" not in chat
    assert models["route"] == "/v1/models" and models["status"] == 200
    assert refused["status"] == 401 and "service" not in refused


def test_request_ids_are_echoed_and_logged(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlx_host.access")
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    mine = httpx.get(f"{server.api_url}/models", headers={**headers, "x-request-id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    forged = httpx.get(
        f"{server.api_url}/models", headers={**headers, "x-request-id": 'x" {"status":200}'}
    )
    assert forged.headers["x-request-id"].startswith("req_")  # not a caller's quotes
    ids = [line["request_id"] for line in access_lines(caplog, 2)]
    assert ids == ["trace-42", forged.headers["x-request-id"]]


def test_metrics_show_the_traffic_to_the_right_keys_only(server: RunningServer, fake) -> None:
    client = server.openai("alpha")
    for _ in client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "count me"}], stream=True
    ):
        pass
    url = f"{server.url}/metrics"
    assert httpx.get(url).status_code == 401
    as_service = httpx.get(url, headers={"Authorization": f"Bearer {server.keys['alpha']}"})
    assert as_service.status_code == 401
    for key in (METRICS_KEY, server.admin_key):
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'mlx_host_requests_total{route="/v1/chat/completions",service="alpha",status="200"}' in text
    )
    assert 'mlx_host_tokens_total{direction="completion",model="smollm2-135m-instruct"' in text
    assert "mlx_host_time_to_first_token_seconds_count" in text
    assert 'mlx_host_memory_bytes{kind="budget"}' in text
    assert 'mlx_host_running_requests{model="smollm2-135m-instruct"} 0.0' in text
    assert "mlx_host_model_loads_total 1.0" in text
