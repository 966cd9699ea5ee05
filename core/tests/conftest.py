"""Core tests run without any service plugin installed: they register their own services."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlx_host import ServicePolicy, ServiceSpec, hookimpl
from mlx_host.fake import FakeLog
from mlx_host.plugins import PluginManager
from mlx_host.testing import RunningServer, free_socket, run_server

ALPHA = ServiceSpec(
    name="alpha",
    key_prefix="alpha_",
    chat_model="smollm2-135m-instruct",
    completion_model="smollm2-135m-instruct",
    policy=ServicePolicy(temperature=0.0, max_tokens=64, max_tokens_cap=256),
)
BETA = ServiceSpec(
    name="beta",
    key_prefix="beta_",
    chat_model="not-on-this-machine",
    completion_model="not-on-this-machine",
    policy=ServicePolicy(temperature=0.0, max_tokens=32, allowed_models=("broken",)),
)


class ServicesPlugin:
    """Registers the given services, as a plugin distribution would."""

    def __init__(self, *services: ServiceSpec) -> None:
        self.services = services

    @hookimpl
    def mlx_host_register_services(self, register: Callable[[ServiceSpec], None]) -> None:
        for service in self.services:
            register(service)


def plugin_manager(*services: ServiceSpec) -> PluginManager:
    """A manager with the built-ins and a test plugin registering ``services``."""
    pm = PluginManager()
    pm.register(ServicesPlugin(*services), "test-services", "test-dist", "0")
    return pm.load(discover=False)


@pytest.fixture(scope="session")
def broken_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose weights are garbage."""
    path = tmp_path_factory.mktemp("broken-model")
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    return path


@pytest.fixture(scope="session")
def server(mlx_host_cache_dir: Path, broken_model_dir: Path) -> Iterator[RunningServer]:
    """One real server for the core tests: alpha serves SmolLM2; beta's default has no source
    and no stand-in, and it may also ask for a model whose directory is corrupt."""
    settings = {"stand_in_models": {}, "models": {"broken": str(broken_model_dir)}}
    with run_server(settings, plugin_manager(ALPHA, BETA), mlx_host_cache_dir) as running:
        yield running


@pytest.fixture
def fake(server: RunningServer) -> FakeLog:
    """The fake engines' log of the module's ``server`` (one started with ``fake=True``),
    cleared for the test."""
    assert server.fake is not None, "this module's server does not run on the fake engines"
    server.fake.clear()
    return server.fake


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, for this test session."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (.ci/run installs it with apt)"
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server failed"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, mlx_host_cache_dir: Path) -> dict:
    """Three distinct random llama models of different sizes, written with real MLX code."""
    from mlx_host.engine.random_model import write_random_llama
    from mlx_host.models.sources import prepare
    from mlx_host.models.spec import EMBEDDED_SOURCE

    tokenizer_dir = prepare(EMBEDDED_SOURCE, mlx_host_cache_dir, "quantized")
    root = tmp_path_factory.mktemp("tiny-models")
    sizes = {"tiny-a": 64, "tiny-b": 128, "tiny-c": 96}
    return {
        name: write_random_llama(root / name, tokenizer_dir, hidden_size=size, seed=i)
        for i, (name, size) in enumerate(sizes.items())
    }


@contextmanager
def held_after_first_token(
    server: RunningServer, model: str | None = None
) -> Iterator[Callable[[], None]]:
    """Let a loaded model's batch produce its next token, then hold its worker before the
    following step until the block ends (or the yielded ``release`` is called): its requests
    stay in flight however fast the machine is, without changing what the engine computes."""
    loaded = server.app.state.host.models
    engine = (loaded.get_loaded(model) if model else loaded.loaded()[0]).engine
    generator = engine.scheduler._generator
    step, gate, produced = generator.next, threading.Event(), threading.Event()

    def held_step() -> Any:
        if produced.is_set():
            gate.wait()
        result = step()
        if result[1]:  # generation responses: a token came out
            produced.set()
        return result

    generator.next = held_step
    try:
        yield gate.set
    finally:
        del generator.next
        gate.set()
