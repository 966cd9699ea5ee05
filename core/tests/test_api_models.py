"""``/v1/models`` and ``/api/v1/health``."""

from __future__ import annotations

import httpx

from mlx_host.testing import RunningServer


def test_models_lists_what_the_service_may_use(server: RunningServer) -> None:
    ids = [m.id for m in server.openai("beta").models.list()]
    assert ids == ["not-on-this-machine", "broken"]
    alpha = [m.id for m in server.openai("alpha").models.list()]
    assert alpha == ["smollm2-135m-instruct"]


def test_models_are_served_at_both_prefixes(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    v1 = httpx.get(f"{server.url}/v1/models", headers=headers).json()
    api = httpx.get(f"{server.url}/api/v1/models", headers=headers).json()
    assert v1["object"] == "list"
    assert [m["id"] for m in v1["data"]] == [m["id"] for m in api["data"]]


def test_retrieve_model(server: RunningServer) -> None:
    model = server.openai("alpha").models.retrieve("smollm2-135m-instruct")
    assert model.id == "smollm2-135m-instruct"
    assert model.owned_by == "HuggingFaceTB"


def test_health_reports_device_blas_and_services(server: RunningServer) -> None:
    health = httpx.get(f"{server.url}/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["device"] in ("cpu", "gpu")
    assert health["weight_format"] in ("float32", "float16", "quantized")
    assert health["blas"]
    assert {s["name"] for s in health["services"]} == {"alpha", "beta"}
    assert all("key" not in str(s.get("api_key", "")) for s in health["services"])


def test_a_model_is_found_by_its_alias(server: RunningServer) -> None:
    model = server.openai("alpha").models.retrieve("smollm2")
    assert model.id == "smollm2" and model.model_extra["served_by"] == "smollm2-135m-instruct"
