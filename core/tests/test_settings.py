"""Settings come from MLX_HOST_* variables, and .env.example (`mlx-host env-example`) documents
every one."""

import re
from pathlib import Path

from typer.testing import CliRunner

from mlx_host.cli import app
from mlx_host.settings import Settings

EXAMPLE = Path(__file__).parents[2] / ".env.example"


def test_comma_separated_lists(monkeypatch) -> None:
    monkeypatch.setenv("MLX_HOST_API_KEYS", "vista_a, fork_b")
    monkeypatch.setenv("MLX_HOST_DISABLED_PLUGINS", "fork")
    monkeypatch.setenv("MLX_HOST_MODELS", '{"qwen3-14b": "/m/qwen"}')
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.api_keys] == ["vista_a", "fork_b"]
    assert settings.disabled_plugins == ["fork"]
    assert settings.models == {"qwen3-14b": "/m/qwen"}
    assert "vista_a" not in repr(settings)


def test_env_example_is_what_the_cli_prints() -> None:
    printed = CliRunner().invoke(app, ["env-example"]).stdout
    assert printed == EXAMPLE.read_text(), "regenerate: uv run mlx-host env-example > .env.example"


def test_env_example_lists_every_setting() -> None:
    listed = set(re.findall(r"^#?\s*MLX_HOST_([A-Z_]+)=", EXAMPLE.read_text(), re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}
