"""A service the core has never seen, added by installing a distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlx_host.plugins import PluginManager
from mlx_host.testing import run_server

PLUGIN = '''
from fastapi import APIRouter
from mlx_host import PromptPolicy, ServiceSpec, hookimpl

router = APIRouter()


@router.get("/ping")
def ping() -> dict:
    """Proves the plugin's own routes are mounted."""
    return {"pong": True}


@hookimpl
def mlx_host_register_services(register):
    register(ServiceSpec(
        name="zebra", key_prefix="zebra_", default_model="smollm2",
        policy=PromptPolicy(temperature=0.0, max_tokens=16), router=router,
    ))
'''


@pytest.fixture
def zebra_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution with real metadata and an entry point, on sys.path."""
    site = tmp_path / "site"
    (site / "mlx_host_zebra").mkdir(parents=True)
    (site / "mlx_host_zebra" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "mlx_host_zebra-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlx-host-zebra\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[mlx_host.services]\nzebra = mlx_host_zebra\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("mlx_host_zebra", None)


def test_installed_plugin_is_discovered(zebra_dist: Path) -> None:
    services = {s.spec.name: s for s in PluginManager().load().services()}
    assert services["zebra"].distribution == "mlx-host-zebra"
    assert services["zebra"].version == "0.3.1"


def test_new_prefix_is_routed_to_the_new_service(zebra_dist: Path, mlx_host_cache_dir) -> None:
    with run_server(cache_dir=mlx_host_cache_dir) as server:
        reply = server.openai("zebra").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Say hi."}]
        )
        assert reply.choices[0].message.content
        assert reply.usage.completion_tokens <= 16  # zebra's policy default applied
        headers = {"Authorization": f"Bearer {server.keys['zebra']}"}
        ping = httpx.get(f"{server.url}/api/v1/zebra/ping", headers=headers)
        assert ping.json() == {"pong": True}
        other = {"Authorization": f"Bearer {server.keys['vista']}"}
        assert httpx.get(f"{server.url}/api/v1/zebra/ping", headers=other).status_code == 403


def test_cli_lists_the_new_plugin(zebra_dist: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(zebra_dist), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "plugins"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(row for row in out.splitlines() if "zebra" in row)
    assert "zebra_" in line and "mlx-host-zebra" in line and "0.3.1" in line


def test_a_plugin_with_a_bad_prefix_is_one_line_naming_it(
    zebra_dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = zebra_dist / "mlx_host_zebra" / "__init__.py"
    module.write_text(module.read_text().replace('key_prefix="zebra_"', 'key_prefix="Zebra-"'))
    env = {**os.environ, "PYTHONPATH": str(zebra_dist), "COLUMNS": "80"}
    run = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "plugins"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1
    output = (run.stdout + run.stderr).strip()
    assert "\n" not in output and "Traceback" not in output
    assert "mlx-host-zebra" in output and "Zebra-" in output
