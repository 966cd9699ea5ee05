"""Read model specs from a TOML file (``MLX_HOST_MODELS_FILE``).

```toml
[models.qwen3-14b]
source = "/models/qwen3-14b-mlx"
aliases = ["qwen3"]
priority = 10
pinned = true
auto_load = true
idle_ttl_seconds = 3600
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from mlx_host.errors import PluginError
from mlx_host.models.spec import ModelSpec


def read_models_file(path: Path) -> list[ModelSpec]:
    """Every ``[models.<name>]`` table of ``path`` as a spec; a bad file stops the start."""
    try:
        tables = tomllib.loads(path.read_text()).get("models", {})
        return [ModelSpec(name=name, **table) for name, table in tables.items()]
    except (OSError, tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        raise PluginError(f"models file {path}: {exc}") from exc
