"""Keys from the key store: accepted without a restart, refused at once when revoked or
expired, on every host that shares the store (a file, or Redis); only hashes are stored."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host.errors import PluginError
from mlx_host.host import Host
from mlx_host.key_store import FileKeyStore, KeyStore, RedisKeyStore, create_key
from mlx_host.settings import Settings
from mlx_host.testing import RunningServer, run_server


def status(server: RunningServer, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{server.api_url}/models", headers=headers).status_code


def test_file_keys_work_without_a_restart_and_die_at_once(
    tmp_path: Path, mlx_host_cache_dir: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    store = FileKeyStore(keys_file)
    settings = {"keys_file": str(keys_file)}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as server:
        key, record = asyncio.run(create_key(store, "alpha", "alpha_", name="ci"))
        assert status(server, key) == 200  # made after the server started
        assert key not in keys_file.read_text() and record.key_hash in keys_file.read_text()
        (listed,) = asyncio.run(store.all())
        assert listed.name == "ci" and listed.last_used_at is not None  # its use was noted
        asyncio.run(store.revoke(record.id))
        assert status(server, key) == 401
        expired, _ = asyncio.run(create_key(store, "alpha", "alpha_", expires_in=0.5))
        assert status(server, expired) == 200
        time.sleep(0.6)
        assert status(server, expired) == 401
        assert status(server, "alpha_" + "x" * 32) == 401  # the right prefix is not enough
    assert json.loads(keys_file.read_text())["keys"][0]["revoked_at"] is not None


def test_redis_keys_are_shared_by_every_host(redis_url: str, mlx_host_cache_dir: Path) -> None:
    settings = {"session_backend": "redis", "redis_url": redis_url}
    pm = plugin_manager(ALPHA)
    with (
        run_server(settings, pm, mlx_host_cache_dir, fake=True) as one,
        run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as two,
    ):

        async def scenario() -> None:
            store: KeyStore = RedisKeyStore(redis_url)
            key, record = await create_key(store, "alpha", "alpha_")
            assert await asyncio.to_thread(status, one, key) == 200
            assert await asyncio.to_thread(status, two, key) == 200
            await store.revoke(record.id)
            assert await asyncio.to_thread(status, one, key) == 401
            assert await asyncio.to_thread(status, two, key) == 401
            await store.close()

        asyncio.run(scenario())


def test_short_configured_keys_stop_the_start(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, api_keys="alpha_s3cr", keys_file=tmp_path / "k.json")  # type: ignore[call-arg]
    with pytest.raises(PluginError) as caught:
        Host.build(settings, plugin_manager(ALPHA))
    assert "too short" in str(caught.value) and "s3cr" not in str(caught.value)
