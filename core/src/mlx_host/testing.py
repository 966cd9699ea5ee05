"""A pytest plugin for mlx-host and its plugin authors: a real server on a free port, with keys.

Installed with mlx-host (entry point ``pytest11``). Fixtures:

- ``mlx_host_fake_server``: a real server whose ``llm``, ``stt``, ``tts`` and ``embedding``
  models run on fake engines (``mlx_host.fake``): plugin tests check what their service asks
  of the engine, in seconds, on any machine. ``.fake`` is the engines' log (``requests``,
  ``reply``, ``hold``), cleared for each test.
- ``mlx_host_server``: one real server with real models for the test session, serving every
  installed service with a fresh key each; ``.url``, ``.keys[service]``, ``.openai(service)``.
- ``start_mlx_host``: a context-manager factory for tests that need their own server
  (other settings, extra plugins).

Converted models are cached in ``MLX_HOST_CACHE_DIR`` when set (tox shares one cache across
environments), else in a session temporary directory.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlx_host.fake import (
    FAKE_EMBEDDING_ENGINE,
    FAKE_ENGINE,
    FAKE_STT_ENGINE,
    FAKE_TTS_ENGINE,
    FakeCall,
    FakeEngines,
    FakeLog,
)
from mlx_host.keys import generate_key
from mlx_host.plugins import InstalledService, PluginManager
from mlx_host.runtime.threads import MLXThread
from mlx_host.services import ServiceSpec
from mlx_host.settings import Settings


@dataclass
class RunningServer:
    """A server started by the fixtures; stopped when its context ends."""

    url: str
    keys: dict[str, str]
    app: Any
    admin_key: str
    fake: FakeLog | None = None  # what its fake engines were asked, when it runs on them

    @property
    def api_url(self) -> str:
        """Base URL of the OpenAI-compatible API (what SDKs call ``base_url``)."""
        return f"{self.url}/v1"

    def openai(self, service: str, **kwargs: Any) -> Any:
        """An official ``openai.OpenAI`` client holding ``service``'s key."""
        from openai import OpenAI

        return OpenAI(base_url=self.api_url, api_key=self.keys[service], **kwargs)


def check_service_policy(server: RunningServer, spec: ServiceSpec) -> FakeCall:
    """Check, on a fake-engine server, that a chat request with ``spec``'s key reaches the
    engine as the service's policy says: its default chat model, its system prompt, its
    sampling defaults; and that ``max_tokens`` over its cap is refused before the engine.
    Returns what the engine received, for a plugin's own further checks."""
    import openai

    assert server.fake is not None, "start the server with fake=True (mlx_host_fake_server)"
    client = server.openai(spec.name, max_retries=0)
    question = [{"role": "user", "content": "What does this service do?"}]
    client.chat.completions.create(model="default", messages=question)
    call = server.fake.last
    policy = spec.policy
    assert (call.service, call.capability, call.model) == (spec.name, "chat", spec.chat_model)
    system = [{"role": "system", "content": policy.system_prompt}] if policy.system_prompt else []
    assert call.messages == [*system, *question]
    assert call.params.temperature == policy.temperature
    assert call.params.top_p == policy.top_p
    assert call.params.max_tokens == policy.max_tokens
    asked = len(server.fake.requests)
    try:
        client.chat.completions.create(
            model="default", messages=question, max_tokens=policy.max_tokens_cap + 1
        )
    except openai.BadRequestError as exc:
        assert exc.body["param"] == "max_tokens"  # type: ignore[index]
    else:
        raise AssertionError(f"max_tokens over {spec.name}'s cap was not refused")
    assert len(server.fake.requests) == asked, "a refused request reached the engine"
    return call


def installed_services() -> dict[str, InstalledService]:
    """Services found through entry points, by name (a plugin's first test checks its own)."""
    return {s.spec.name: s for s in PluginManager().load().services()}


def free_socket() -> socket.socket:
    """A listening-ready socket bound to a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def run_server(
    settings: dict[str, Any] | None = None,
    plugins: PluginManager | None = None,
    cache_dir: Path | None = None,
    keys: dict[str, str] | None = None,
    *,
    fake: bool = False,
) -> Iterator[RunningServer]:
    """Start a real uvicorn server in a thread on a free port, with one key per service
    (``keys`` to reuse another server's, e.g. for two hosts sharing Redis). With ``fake``,
    every model of the core's kinds (llm, stt, tts, embedding) runs on the fake engines."""
    import uvicorn

    from mlx_host.app import create_app

    overrides = dict(settings or {})
    plugins = plugins or PluginManager(overrides.get("disabled_plugins", ())).load()
    log = None
    if fake:
        log = FakeLog()
        plugins.register(FakeEngines(log), "mlx_host.fake", "mlx-host")
        overrides.setdefault(
            "engines",
            {
                "llm": FAKE_ENGINE,
                "stt": FAKE_STT_ENGINE,
                "tts": FAKE_TTS_ENGINE,
                "embedding": FAKE_EMBEDDING_ENGINE,
            },
        )
    services = plugins.services()
    keys = keys or {s.spec.name: generate_key(s.spec.key_prefix) for s in services}
    admin_key = "admin-" + generate_key("test_")
    if cache_dir is not None:
        overrides.setdefault("cache_dir", cache_dir)
    overrides.setdefault("api_keys", list(keys.values()))
    overrides.setdefault("admin_key", admin_key)
    config = Settings(_env_file=None, **overrides)
    app = create_app(config, plugins)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,  # mlx_host.access writes the access lines
            lifespan="on",
            timeout_graceful_shutdown=config.shutdown_timeout_seconds,
        )
    )
    # The event loop reads MLX's memory figures: its thread must outlive the process.
    thread = MLXThread(lambda: server.run(sockets=[sock]), name="mlx-host-test-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("mlx-host test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", keys, app, admin_key, log)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(scope="session")
def mlx_host_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where converted models are kept for this test session."""
    env_cache = os.environ.get("MLX_HOST_CACHE_DIR")
    return Path(env_cache) if env_cache else tmp_path_factory.mktemp("mlx-host-cache")


@pytest.fixture(scope="session")
def _mlx_host_fake_session(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server(cache_dir=mlx_host_cache_dir, fake=True) as server:
        yield server


@pytest.fixture
def mlx_host_fake_server(_mlx_host_fake_session: RunningServer) -> RunningServer:
    """A real server of every installed service whose models run on the fake engines;
    its ``.fake`` log starts empty in each test."""
    assert _mlx_host_fake_session.fake is not None
    _mlx_host_fake_session.fake.clear()
    return _mlx_host_fake_session


@pytest.fixture(scope="session")
def mlx_host_server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    """A real mlx-host server for the whole session, serving every installed service."""
    with run_server(cache_dir=mlx_host_cache_dir) as server:
        yield server


@pytest.fixture
def start_mlx_host(
    mlx_host_cache_dir: Path,
) -> Callable[..., AbstractContextManager[RunningServer]]:
    """Factory: ``with start_mlx_host(settings={...}, plugins=pm, fake=True) as server:``."""

    def start(
        settings: dict[str, Any] | None = None,
        plugins: PluginManager | None = None,
        *,
        fake: bool = False,
    ) -> AbstractContextManager[RunningServer]:
        return run_server(settings, plugins, cache_dir=mlx_host_cache_dir, fake=fake)

    return start
