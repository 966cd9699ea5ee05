"""The ``mlx-host`` command as an operator meets it: bad settings, bad choices and bad keys are
one clear line, and listings are never cut short."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ALPHA, plugin_manager
from typer.testing import CliRunner

from mlx_host.cli import app
from mlx_host.settings import get_settings
from mlx_host.testing import RunningServer, run_server

LONG_NAME = "mlx-community/a-model-name-much-longer-than-any-terminal-column-would-hold-v2"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mlx-host ARGS`` in a fresh process with only ``env`` among the MLX_HOST_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLX_HOST_")}
    return subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", *args],
        env={**clean, "COLUMNS": "80", **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLX_HOST_PORT", "abc", "valid integer"),
        ("MLX_HOST_WEIGHT_FORMAT", "int4", "'auto', 'float32', 'float16' or 'quantized'"),
        ("MLX_HOST_ENGINES", "llm=fake", "engines"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(variable: str, value: str, expected: str) -> None:
    run = cli("plugins", **{variable: value})
    assert run.returncode == 2
    output = (run.stdout + run.stderr).strip()
    assert output.count("\n") == 0, output
    assert expected in output and (
        (variable in output and repr(value) in output)
        or variable.removeprefix("MLX_HOST_").lower() in output
    )


def test_convert_refuses_an_unknown_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["models", "convert", str(tmp_path / "in.gguf"), str(tmp_path / "out"),
              "--format", "int4"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "int4" in result.output and "quantized" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture
def managed(
    mlx_host_cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    """A server with a model whose name is long, and the CLI's settings pointing at it."""
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[models."{LONG_NAME}"]\nsource = "{tmp_path / "absent"}"\n')
    settings = {"models_file": models_file}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir) as server:
        monkeypatch.setenv("MLX_HOST_ADMIN_KEY", server.admin_key)
        get_settings.cache_clear()
        yield server
    get_settings.cache_clear()


def test_models_list_shows_long_names_whole(managed: RunningServer) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--url", managed.url])
    assert result.exit_code == 0, result.output
    assert any(LONG_NAME in line for line in result.output.splitlines()), result.output


def test_models_list_says_what_to_set_for_a_wrong_key(
    managed: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLX_HOST_ADMIN_KEY", "not-the-servers-key")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["models", "list", "--url", managed.url])
    assert result.exit_code == 1
    assert "MLX_HOST_ADMIN_KEY" in result.output and "refused" in result.output


def test_models_list_says_what_to_set_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLX_HOST_ADMIN_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["models", "list", "--url", "http://127.0.0.1:1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "MLX_HOST_ADMIN_KEY" in result.output and "admin key" in result.output
