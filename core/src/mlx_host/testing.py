"""A pytest plugin for mlx-host and its plugin authors: a real server on a free port, with keys.

Installed with mlx-host (entry point ``pytest11``). Fixtures:

- ``mlx_host_server``: one real uvicorn server for the test session, serving every installed
  service with a fresh key each; ``.url``, ``.keys[service]``, ``.openai(service)``.
- ``start_mlx_host``: a context-manager factory for tests that need their own server
  (other settings, extra plugins).

Converted models are cached in ``MLX_HOST_CACHE_DIR`` when set (tox shares one cache across
environments), else in a session temporary directory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlx_host.keys import generate_key
from mlx_host.plugins import InstalledService, PluginManager
from mlx_host.settings import Settings


@dataclass
class RunningServer:
    """A server started by the fixtures; stopped when its context ends."""

    url: str
    keys: dict[str, str]
    app: Any
    admin_key: str

    @property
    def api_url(self) -> str:
        """Base URL of the OpenAI-compatible API (what SDKs call ``base_url``)."""
        return f"{self.url}/v1"

    def openai(self, service: str, **kwargs: Any) -> Any:
        """An official ``openai.OpenAI`` client holding ``service``'s key."""
        from openai import OpenAI

        return OpenAI(base_url=self.api_url, api_key=self.keys[service], **kwargs)


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
) -> Iterator[RunningServer]:
    """Start a real uvicorn server in a thread on a free port, with one key per service
    (``keys`` to reuse another server's, e.g. for two hosts sharing Redis)."""
    import uvicorn

    from mlx_host.app import create_app

    overrides = dict(settings or {})
    plugins = plugins or PluginManager(overrides.get("disabled_plugins", ())).load()
    services = plugins.services()
    keys = keys or {s.spec.name: generate_key(s.spec.key_prefix) for s in services}
    admin_key = "admin-" + generate_key("test_")
    if cache_dir is not None:
        overrides.setdefault("cache_dir", cache_dir)
    overrides.setdefault("api_keys", list(keys.values()))
    overrides.setdefault("admin_key", admin_key)
    config = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    app = create_app(config, plugins)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=config.shutdown_timeout_seconds,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("mlx-host test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", keys, app, admin_key)
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
def mlx_host_server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    """A real mlx-host server for the whole session, serving every installed service."""
    with run_server(cache_dir=mlx_host_cache_dir) as server:
        yield server


@pytest.fixture
def start_mlx_host(
    mlx_host_cache_dir: Path,
) -> Callable[..., AbstractContextManager[RunningServer]]:
    """Factory: ``with start_mlx_host(settings={...}, plugins=pm) as server: ...``."""

    def start(
        settings: dict[str, Any] | None = None, plugins: PluginManager | None = None
    ) -> AbstractContextManager[RunningServer]:
        return run_server(settings, plugins, cache_dir=mlx_host_cache_dir)

    return start
