"""A plugin the core has never seen, written from the README, built and installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlx_host.plugins import PluginManager
from mlx_host.testing import RunningServer, run_server


def env_with(site: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **extra}


@pytest.fixture
def installed(zebra_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The recipe installed in this process."""
    monkeypatch.syspath_prepend(str(zebra_site))
    yield zebra_site
    for module in [m for m in sys.modules if m.startswith("mlx_host_zebra")]:
        del sys.modules[module]


def test_the_recipes_own_tests_pass(zebra_recipe: Path, zebra_site: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(zebra_recipe / "tests")],
        env=env_with(zebra_site), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_installed_plugin_is_discovered(installed: Path) -> None:
    services = {s.spec.name: s for s in PluginManager().load().services()}
    assert services["zebra"].distribution == "mlx-host-zebra"
    assert services["zebra"].version == "0.1.0"


@pytest.fixture
def server(installed: Path, mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server(cache_dir=mlx_host_cache_dir) as running:
        yield running


def test_its_route_and_model_of_a_new_kind_work_beside_every_service(
    server: RunningServer,
) -> None:
    def stripe(service: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {server.keys[service]}"}
        return httpx.post(f"{server.url}/api/v1/zebra/stripe", headers=headers,
                          json={"text": "zebra"})  # fmt: skip

    assert stripe("zebra").json() == {"service": "zebra", "text": "zEbRa"}
    assert stripe("vista").status_code == 403
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    usage = httpx.get(f"{server.url}/api/v1/models/memory/usage", headers=headers).json()
    assert {"name": "zebra-stripes", "kind": "stripes"}.items() <= next(
        m for m in usage["models"] if m["name"] == "zebra-stripes"
    ).items()
    reply = server.openai("zebra").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert reply.usage.completion_tokens <= 4


def test_cli_lists_it_and_runs_its_command(zebra_site: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "plugins"],
        env=env_with(zebra_site), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(row for row in listed.splitlines() if "zebra_" in row)
    assert "mlx-host-zebra" in line and "0.1.0" in line
    assert any("stripes" in row for row in listed.splitlines())
    command = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "zebra-stripe", "hello"],
        env=env_with(zebra_site), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert command.stdout.strip() == "hElLo"


def test_a_plugin_with_a_bad_prefix_is_one_line_naming_it(zebra_site: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(zebra_site, site)
    module = site / "mlx_host_zebra" / "plugin.py"
    module.write_text(module.read_text().replace('key_prefix="zebra_"', 'key_prefix="Zebra-"'))
    run = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "plugins"],
        env=env_with(site, COLUMNS="80"), capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1
    output = (run.stdout + run.stderr).strip()
    assert "\n" not in output and "Traceback" not in output
    assert "mlx-host-zebra" in output and "Zebra-" in output
