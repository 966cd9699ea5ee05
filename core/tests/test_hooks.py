"""Every hook, called through a real plugin registration and used end to end; and every hook
documented on the plugin authors' page (as datasette tests its hooks)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from conftest import ALPHA, ServicesPlugin, plugin_manager
from fastapi import APIRouter
from pydantic import BaseModel
from typer.testing import CliRunner

from mlx_host import (
    Caller,
    Engine,
    EngineType,
    HostDep,
    ModelSpec,
    ServicePolicy,
    ServiceSpec,
    TextGenerator,
    hookimpl,
    hookspecs,
)
from mlx_host.plugins import PluginManager
from mlx_host.testing import RunningServer, run_server

DOCS = Path(__file__).parents[2] / "docs" / "plugins.md"
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs) if name.startswith("mlx_host_"))


class Reverser(Engine):
    """A model kind of its own, with no MLX: it answers text reversed."""

    kind = "reverse"
    started = False

    async def start(self) -> None:
        self.started = True

    @property
    def memory_bytes(self) -> int:
        return 4096

    @property
    def busy(self) -> bool:
        return False

    async def close(self, wait_seconds: float) -> None:
        self.started = False

    def reverse(self, text: str) -> str:
        return text[::-1]


class Text(BaseModel):
    text: str


router = APIRouter(prefix="/kappa")


@router.post("/reverse")
async def reverse(body: Text, caller: Caller, host: HostDep) -> dict[str, Any]:
    """A plugin route using a model of its plugin's own kind, for the caller's service."""
    model = await host.models.get("reverser", "reverse")
    assert isinstance(model.engine, Reverser)
    return {"service": caller.spec.name, "text": model.engine.reverse(body.text)}


@router.get("/which")
async def which(caller: Caller, host: HostDep) -> dict[str, Any]:
    """The model the caller's service gets for chat, by its policy."""
    name, model = await host.model_for(caller.spec, "chat")
    assert isinstance(model.engine, TextGenerator)
    return {"chosen": name, "served_by": model.name, "kind": model.spec.kind}


KAPPA = ServiceSpec(name="kappa", key_prefix="kappa_", chat_model="smollm2-135m-instruct")


class KappaPlugin:
    """Everything a plugin can register, through the public API only."""

    @hookimpl
    def mlx_host_register_services(self, register: Callable[[ServiceSpec], None]) -> None:
        register(KAPPA)

    @hookimpl
    def mlx_host_register_models(self, register: Callable[[ModelSpec], None]) -> None:
        register(ModelSpec(name="reverser", kind="reverse", source=str(Path(__file__))))

    @hookimpl
    def mlx_host_register_engines(self, register: Callable[[EngineType], None]) -> None:
        register(EngineType(name="reverser", kind="reverse", engine=Reverser))
        register(
            EngineType(
                name="needs-extra",
                kind="holo",
                engine="mlx_host_holo.engine:HoloEngine",
                requires=("mlx_host_holo_not_installed",),
                install_hint="pip install mlx-host-holo",
            )
        )

    @hookimpl
    def mlx_host_register_routes(self, register: Callable[..., None]) -> None:
        register(router, service="kappa")

    @hookimpl
    def mlx_host_register_commands(self, cli: typer.Typer) -> None:
        @cli.command("kappa-hello")
        def hello(name: str) -> None:
            """Says hello (a plugin's own subcommand)."""
            print(f"hello {name} from kappa")


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    pm = PluginManager()
    pm.register(KappaPlugin(), "kappa", "mlx-host-kappa", "1.2")
    pm.register(ServicesPlugin(ALPHA), "alpha", "test-dist", "0")
    with run_server({}, pm.load(discover=False), mlx_host_cache_dir, fake=True) as running:
        yield running


def post(server: RunningServer, path: str, service: str, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    return httpx.post(f"{server.url}{path}", headers=headers, json=body, timeout=30)


def test_hook_mlx_host_register_services(server: RunningServer) -> None:
    assert set(server.keys) == {"kappa", "alpha"}
    reply = server.openai("kappa").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hi"  # the fake engine's echo
    assert server.fake is not None and server.fake.last.service == "kappa"


def test_hook_mlx_host_register_models(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    listed = httpx.get(f"{server.api_url}/models", headers=headers).json()["data"]
    reverser = next(m for m in listed if m["id"] == "reverser")
    assert reverser["kind"] == "reverse" and reverser["engine"] == "reverser"


def test_hook_mlx_host_register_engines(server: RunningServer) -> None:
    """A model of a new engine kind loads under the memory manager and serves a route."""
    response = post(server, "/v1/kappa/reverse", "kappa", text="stressed")
    assert response.json() == {"service": "kappa", "text": "desserts"}
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    usage = httpx.get(f"{server.url}/api/v1/models/memory/usage", headers=headers).json()
    (model,) = [m for m in usage["models"] if m["name"] == "reverser"]
    assert model["kind"] == "reverse" and model["memory_bytes"] == 4096
    engines = {e["name"]: e for e in httpx.get(f"{server.url}/v1/health").json()["engines"]}
    assert engines["reverser"]["available"] and engines["mlx-lm"]["available"]
    missing = engines["needs-extra"]
    assert not missing["available"] and missing["install_hint"] == "pip install mlx-host-holo"


def test_hook_mlx_host_register_routes(server: RunningServer) -> None:
    """Mounted under /v1 and /api/v1, for the named service's keys only."""
    assert post(server, "/api/v1/kappa/reverse", "kappa", text="ab").json()["text"] == "ba"
    other = post(server, "/v1/kappa/reverse", "alpha", text="ab")
    assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
    anonymous = httpx.post(f"{server.url}/v1/kappa/reverse", json={"text": "ab"})
    assert anonymous.status_code == 401


def test_routes_reach_models_through_the_services_policy(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.keys['kappa']}"}
    chosen = httpx.get(f"{server.api_url}/kappa/which", headers=headers).json()
    assert chosen == {"chosen": "smollm2-135m-instruct", "served_by": "smollm2-135m-instruct",
                      "kind": "llm"}  # fmt: skip


def test_hook_mlx_host_register_commands() -> None:
    pm = PluginManager()
    pm.register(KappaPlugin(), "kappa", "mlx-host-kappa", "1.2")
    cli = typer.Typer()

    @cli.command()
    def builtin() -> None:
        """A command of the host's own."""

    pm.load(discover=False).add_commands(cli)
    result = CliRunner().invoke(cli, ["kappa-hello", "world"])
    assert result.exit_code == 0 and "hello world from kappa" in result.output


def test_a_model_whose_engine_is_not_installed_says_what_to_install(
    mlx_host_cache_dir: Path, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text('[models.hologram]\nsource = "/nowhere"\nkind = "holo"\n')
    pm = PluginManager()
    pm.register(KappaPlugin(), "kappa", "mlx-host-kappa", "1.2")
    settings = {"models_file": models_file}
    with run_server(settings, pm.load(discover=False), mlx_host_cache_dir, fake=True) as server:
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        response = httpx.post(f"{server.api_url}/models/hologram/load", headers=headers)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "pip install mlx-host-holo" in error["message"]


def test_every_hook_is_documented_and_tested() -> None:
    page = DOCS.read_text()
    assert len(HOOKS) == 5
    tests = {name for name in globals() if name.startswith("test_hook_")}
    for hook in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        assert "Called" in doc and "returns" in doc, f"{hook}'s docstring"
        assert re.search(rf"^#+ `?{hook}", page, re.MULTILINE), f"{hook} is not in {DOCS.name}"
        assert f"test_hook_{hook}" in tests, f"{hook} has no test"


def test_plugin_tests_can_use_the_fake_engine_of_a_loaded_service() -> None:
    """Services registered in tests may name models the fake engine then serves."""
    spec = ServiceSpec(
        name="lambda", key_prefix="lambda_", chat_model="qwen3-14b",
        policy=ServicePolicy(system_prompt="Be brief.", max_tokens=7),
    )  # fmt: skip
    with run_server({}, plugin_manager(spec), fake=True) as server:
        reply = server.openai("lambda").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hello there, friend"}]
        )
        assert server.fake is not None
        call = server.fake.last
    assert call.model == "qwen3-14b" and call.served_by == "smollm2-135m-instruct"
    assert call.messages[0] == {"role": "system", "content": "Be brief."}
    assert call.params.max_tokens == 7 and reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "hello t"
