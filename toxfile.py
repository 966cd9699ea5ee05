"""tox's plugin for this repository: one environment per plugin directory.

Every directory under ``plugins/`` gets an environment of its name (its tests, with only the
core beside it), so that a new plugin's tests run with ``uv run tox -e <name>`` without
editing ``tox.ini``. The default run is lint, typecheck, core, every plugin, integration and
the schema fuzzing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tox.config.loader.memory import MemoryLoader
from tox.config.types import EnvList
from tox.plugin import impl

PLUGINS = sorted(p.name for p in (Path(__file__).parent / "plugins").iterdir() if p.is_dir())


@impl
def tox_extend_envs() -> list[str]:
    """The plugin environments, known to tox without a section of their own."""
    return PLUGINS


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    """Run every environment by default, the plugins' included."""
    envs = ["lint", "typecheck", "core", *PLUGINS, "integration", "fuzz"]
    core_conf.loaders.insert(0, MemoryLoader(env_list=EnvList(envs)))
