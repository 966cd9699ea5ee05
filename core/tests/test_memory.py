"""The memory manager with real models: budgets, eviction order, pins, in-flight requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import held_after_first_token, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.engine import row_padding
from mlx_host.engine.scheduler import kv_bound
from mlx_host.models.spec import EMBEDDED_SOURCE
from mlx_host.testing import RunningServer, run_server

GAMMA = ServiceSpec(
    name="gamma",
    key_prefix="gamma_",
    chat_model="tiny-a",
    completion_model="tiny-a",
    policy=ServicePolicy(temperature=0, max_tokens=4, allowed_models=("*",)),
)
DELTA = ServiceSpec(
    name="delta",
    key_prefix="delta_",
    chat_model="tiny-b",
    completion_model="tiny-b",
    policy=ServicePolicy(temperature=0, max_tokens=4, allowed_models=("*",)),
)
Start = Callable[..., AbstractContextManager[RunningServer]]


def size(path: Path) -> int:
    return (path / "model.safetensors").stat().st_size


def held_by_others() -> int:
    """MLX memory this test process already holds for other tests' servers. It counts against
    every budget in the process, as any memory MLX holds does, so budgets here are set above it."""
    from mlx_host.engine import memory

    memory.release_unused()
    return sum(memory.held())


@pytest.fixture
def start(tiny_models: dict[str, Path], mlx_host_cache_dir: Path, tmp_path: Path) -> Start:
    """Start a server whose models file lists the tiny models, with per-model ``extra`` keys
    and ``budget`` bytes for its own models."""

    def run(budget: int, **extra: dict[str, Any]) -> AbstractContextManager[RunningServer]:
        lines = []
        for name, path in tiny_models.items():
            lines.append(f'[models.{name}]\nsource = "{path}"')
            lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}"
                      for k, v in extra.get(name, {}).items()]  # fmt: skip
        models_file = tmp_path / "models.toml"
        models_file.write_text("\n".join(lines))
        settings = {
            "models_file": models_file,
            "memory_budget_bytes": budget + held_by_others(),
            "stand_in_models": {},
        }
        return run_server(settings, plugin_manager(GAMMA, DELTA), mlx_host_cache_dir)

    return run


def chat(server: RunningServer, service: str, model: str = "default", **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.keys[service]}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **kw},
        timeout=60,
    )


def usage(server: RunningServer) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    return httpx.get(f"{server.url}/api/v1/models/memory/usage", headers=headers).json()


def loaded(server: RunningServer) -> set[str]:
    return {m["name"] for m in usage(server)["models"]}


def admin(server: RunningServer, action: str, model: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    return httpx.post(f"{server.url}/api/v1/models/{model}/{action}", headers=headers, timeout=60)


def two_of_three(tiny: dict[str, Path]) -> int:
    """A budget that holds tiny-a with tiny-b, or either with tiny-c, but not all three."""
    return size(tiny["tiny-b"]) + size(tiny["tiny-c"]) + 1_000_000


def test_hot_models_stay_and_the_third_evicts_the_least_recent(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    with start(two_of_three(tiny_models)) as server:
        for _ in range(3):  # services alternate; both defaults stay loaded
            assert chat(server, "gamma").status_code == 200
            assert chat(server, "delta").status_code == 200
        assert loaded(server) == {"tiny-a", "tiny-b"}
        assert server.app.state.host.models.loads == 2
        report = usage(server)
        assert report["used_bytes"] >= sum(m["memory_bytes"] for m in report["models"])
        for m in report["models"]:  # measured bytes are the weights actually loaded
            assert abs(m["weight_bytes"] - size(tiny_models[m["name"]])) < 0.01 * m["weight_bytes"]
        assert report["free_bytes"] == report["budget_bytes"] - report["committed_bytes"]

        assert chat(server, "gamma", "tiny-c").status_code == 200  # tiny-a used least recently
        assert loaded(server) == {"tiny-b", "tiny-c"}
        assert usage(server)["committed_bytes"] <= usage(server)["budget_bytes"]


def test_the_report_shows_how_a_model_pads_its_products(
    start: Start, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan made at load (here from stand-in times where 4 rows are fastest) is the
    model's, and the model answers with it (one row is padded to 4 at each step)."""
    monkeypatch.setattr(
        row_padding, "time_rows", lambda weights, rows: {n: 10.0 if n < 4 else 5.0 for n in rows}
    )
    with start(two_of_three(tiny_models)) as server:
        answer = chat(server, "gamma", max_tokens=4)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
        (model,) = usage(server)["models"]
        assert model["padded_rows"] == {"1": 4, "2": 4, "3": 4}


def test_lower_priority_goes_first_even_if_used_recently(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    with start(two_of_three(tiny_models), **{"tiny-b": {"priority": -1}}) as server:
        chat(server, "delta")
        chat(server, "gamma")  # tiny-a is now the least recent, but tiny-b has lower priority
        assert chat(server, "gamma", "tiny-c").status_code == 200
        assert loaded(server) == {"tiny-a", "tiny-c"}


def test_pinned_models_are_never_evicted(start: Start, tiny_models: dict[str, Path]) -> None:
    budget = size(tiny_models["tiny-a"]) + size(tiny_models["tiny-c"]) + 1_000_000
    with start(budget, **{"tiny-a": {"pinned": True}}) as server:
        chat(server, "gamma")
        assert chat(server, "delta").status_code == 503  # tiny-b cannot fit beside pinned tiny-a
        assert chat(server, "gamma", "tiny-c").status_code == 200
        chat(server, "gamma")
        response = chat(server, "delta")
        assert loaded(server) == {"tiny-a", "tiny-c"} or response.status_code == 200
        assert "tiny-a" in loaded(server)


def test_nothing_evictable_is_503_naming_the_holders(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    with start(size(tiny_models["tiny-b"]) + 1_000_000, **{"tiny-a": {"pinned": True}}) as server:
        assert chat(server, "gamma").status_code == 200
        response = chat(server, "delta")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        error = response.json()["error"]
        assert error["code"] == "insufficient_memory"
        assert "tiny-a" in error["message"] and "pinned" in error["message"]
        assert chat(server, "gamma").status_code == 200  # the loaded model keeps serving


def test_model_streaming_a_reply_is_never_evicted(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    with start(two_of_three(tiny_models)) as server:
        assert chat(server, "gamma").status_code == 200  # tiny-a
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 400, "stream": True}  # fmt: skip
        headers = {"Authorization": f"Bearer {server.keys['gamma']}"}
        with (
            held_after_first_token(server, "tiny-a"),
            httpx.stream(
                "POST", f"{server.api_url}/chat/completions", headers=headers, json=body, timeout=60
            ) as stream,
        ):
            lines = stream.iter_lines()
            next(lines)
            assert chat(server, "delta").status_code == 200  # tiny-b, used after tiny-a
            # tiny-a is the least recently used model, but busy: tiny-b must go instead.
            assert chat(server, "delta", "tiny-c").status_code == 200
            assert loaded(server) == {"tiny-a", "tiny-c"}


def test_concurrent_first_requests_share_one_load(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    with start(10**9) as server:

        async def both() -> list[int]:
            calls = [asyncio.to_thread(chat, server, "gamma", "tiny-c") for _ in range(3)]
            return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(both()) == [200, 200, 200]
        assert server.app.state.host.models.loads == 1


def test_idle_ttl_unloads(start: Start, tiny_models: dict[str, Path]) -> None:
    with start(10**9, **{"tiny-a": {"idle_ttl_seconds": 1}}) as server:
        chat(server, "gamma")
        chat(server, "delta")
        deadline = time.monotonic() + 10
        while "tiny-a" in loaded(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loaded(server) == {"tiny-b"}


def test_auto_load_and_admin_load_unload(start: Start, tiny_models: dict[str, Path]) -> None:
    with start(10**9, **{"tiny-c": {"auto_load": True}}) as server:
        assert loaded(server) == {"tiny-c"}
        assert admin(server, "load", "tiny-a").json()["loaded"] is True
        assert admin(server, "unload", "tiny-c").json()["loaded"] is False
        assert loaded(server) == {"tiny-a"}
        assert admin(server, "unload", "tiny-c").status_code == 404
        service_key = {"Authorization": f"Bearer {server.keys['gamma']}"}
        denied = httpx.post(f"{server.url}/api/v1/models/tiny-b/load", headers=service_key)
        assert denied.status_code == 401


def test_models_listing_shows_memory_and_state(start: Start, tiny_models: dict[str, Path]) -> None:
    with start(10**9, **{"tiny-b": {"pinned": True, "priority": 5}}) as server:
        chat(server, "gamma")
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        models = {
            m["id"]: m
            for m in httpx.get(f"{server.api_url}/models", headers=headers).json()["data"]
        }
        assert {"tiny-a", "tiny-b", "tiny-c", "smollm2-135m-instruct"} <= set(models)
        assert models["tiny-a"]["loaded"] and models["tiny-a"]["memory_bytes"] > 0
        assert models["tiny-a"]["last_used"] is not None
        assert not models["tiny-b"]["loaded"] and models["tiny-b"]["pinned"]
        assert models["tiny-b"]["priority"] == 5
        assert models["tiny-c"]["weight_format"] == "float32"  # as stored: not converted


def test_embedded_model_in_two_formats_measures_each(
    mlx_host_cache_dir: Path, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        f'[models.smol-quantized]\nsource = "{EMBEDDED_SOURCE}"\nweight_format = "quantized"\n'
        f'[models.smol-float32]\nsource = "{EMBEDDED_SOURCE}"\nweight_format = "float32"\n'
    )
    settings = {"models_file": models_file, "stand_in_models": {}}
    with run_server(settings, plugin_manager(GAMMA), mlx_host_cache_dir) as server:
        for name in ("smol-quantized", "smol-float32"):
            reply = chat(server, "gamma", name, max_tokens=8)
            assert reply.status_code == 200, reply.text
        report = {m["name"]: m for m in usage(server)["models"]}
    quantized, full = report["smol-quantized"], report["smol-float32"]
    # Q4/Q8 weights are several times smaller than the same model in float32.
    assert 3 * quantized["weight_bytes"] < full["weight_bytes"]
    assert full["weight_bytes"] > 500_000_000


def test_two_names_for_one_directory_share_one_load(
    start: Start, tiny_models: dict[str, Path], tmp_path: Path, mlx_host_cache_dir: Path
) -> None:
    models_file = tmp_path / "twins.toml"
    source = tiny_models["tiny-a"]
    models_file.write_text(
        f'[models.twin-one]\nsource = "{source}"\n[models.twin-two]\nsource = "{source}/"\n'
    )
    settings = {"models_file": models_file, "stand_in_models": {}}
    with run_server(settings, plugin_manager(GAMMA), mlx_host_cache_dir) as server:
        assert chat(server, "gamma", "twin-one").status_code == 200
        assert chat(server, "gamma", "twin-two").status_code == 200
        assert server.app.state.host.models.loads == 1
        (model,) = usage(server)["models"]
        assert model["names"] == ["twin-one", "twin-two"]
        assert admin(server, "unload", "twin-two").status_code == 200
        assert usage(server)["models"] == []


def test_unloading_a_stand_in_name_says_what_it_would_unload(
    mlx_host_cache_dir: Path,
) -> None:
    stood_in = ServiceSpec(
        name="kappa", key_prefix="kappa_", chat_model="not-here", completion_model="not-here"
    )
    settings = {"stand_in_models": {"llm": "smollm2-135m-instruct"}}
    with run_server(settings, plugin_manager(stood_in), mlx_host_cache_dir) as server:
        assert chat(server, "kappa", max_tokens=2).status_code == 200
        refused = admin(server, "unload", "not-here")
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["code"] == "stand_in_model" and "smollm2-135m-instruct" in error["message"]
        assert loaded(server) == {"smollm2-135m-instruct"}


def test_the_stored_format_of_a_directory_is_read_from_it(
    tiny_models: dict[str, Path], mlx_host_cache_dir: Path, tmp_path: Path
) -> None:
    import mlx.core as mx

    from mlx_host.models.sources import prepare, stored_format

    assert stored_format(tiny_models["tiny-a"]) == "float32"
    assert stored_format(prepare(EMBEDDED_SOURCE, mlx_host_cache_dir, "quantized")).startswith(
        "quantized"
    )
    half = tmp_path / "half"
    half.mkdir()
    weights = mx.load(str(tiny_models["tiny-a"] / "model.safetensors"))
    mx.save_safetensors(
        str(half / "model.safetensors"), {k: v.astype(mx.float16) for k, v in weights.items()}
    )
    (half / "config.json").write_text((tiny_models["tiny-a"] / "config.json").read_text())
    assert stored_format(half) == "float16"


def test_two_names_for_one_directory_asked_at_once_share_one_load(
    tiny_models: dict[str, Path], tmp_path: Path, mlx_host_cache_dir: Path
) -> None:
    models_file = tmp_path / "twins.toml"
    source = tiny_models["tiny-b"]
    models_file.write_text(
        f'[models.twin-one]\nsource = "{source}"\n[models.twin-two]\nsource = "{source}"\n'
    )
    settings = {"models_file": models_file, "stand_in_models": {}}
    with run_server(settings, plugin_manager(GAMMA), mlx_host_cache_dir) as server:

        async def both() -> list[int]:
            calls = [
                asyncio.to_thread(chat, server, "gamma", name) for name in ("twin-one", "twin-two")
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(both()) == [200, 200]
        assert server.app.state.host.models.loads == 1


def test_requests_short_of_kv_memory_evict_an_idle_model(
    start: Start, tiny_models: dict[str, Path]
) -> None:
    """A request whose KV cache does not fit beside idle models gets their room."""
    with start(10**9) as server:
        assert chat(server, "gamma").status_code == 200  # tiny-a
        assert chat(server, "delta").status_code == 200  # tiny-b, now idle
        host = server.app.state.host
        tiny_a = host.models.get_loaded("tiny-a").engine.scheduler
        need = kv_bound([2_000], tiny_a.kv_bytes_per_token)  # what one long request claims
        host.models.budget.total_bytes = host.models.committed_bytes() + need // 2
        with held_after_first_token(server, "tiny-a"), httpx.stream(
            "POST", f"{server.api_url}/chat/completions",
            headers={"Authorization": f"Bearer {server.keys['gamma']}"},
            json={"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 2_000, "stream": True},
            timeout=60,
        ) as stream:  # fmt: skip
            assert stream.status_code == 200  # admitted: its first token came out
            assert loaded(server) == {"tiny-a"}


def test_a_request_that_waits_too_long_for_its_turn_is_503(
    mlx_host_cache_dir: Path, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[models.tiny-a]\nsource = "{tiny_models["tiny-a"]}"\n')
    settings = {"models_file": models_file, "stand_in_models": {}, "max_batch_size": 1,
                "queue_timeout_seconds": 1}  # fmt: skip
    with run_server(settings, plugin_manager(GAMMA), mlx_host_cache_dir) as server:
        assert chat(server, "gamma").status_code == 200
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
        with held_after_first_token(server, "tiny-a"), httpx.stream(
            "POST", f"{server.api_url}/chat/completions",
            headers={"Authorization": f"Bearer {server.keys['gamma']}"}, json=body, timeout=60,
        ) as running:  # fmt: skip
            assert running.status_code == 200
            waited = chat(server, "gamma")  # no row until the held request ends
        assert waited.status_code == 503
        assert waited.json()["error"]["code"] == "queue_timeout"
