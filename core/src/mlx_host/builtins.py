"""The core's own contributions, registered through the same hooks as any plugin's (as in
pluggy's eggsample and tox's built-in runners)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlx_host.hookspecs import hookimpl
from mlx_host.models.engine import EngineType
from mlx_host.models.spec import EMBEDDED_LLM, ModelSpec


@hookimpl
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """The embedded default LLM, which works on a fresh machine with no model hub."""
    register(EMBEDDED_LLM)


@hookimpl
def mlx_host_register_engines(register: Callable[[EngineType], None]) -> None:
    """mlx-lm for ``llm`` models."""
    register(
        EngineType(
            name="mlx-lm",
            kind="llm",
            engine="mlx_host.engine.llm:LLMEngine",
            requires=("mlx_lm",),
            install_hint="pip install mlx-lm",
            description="Text generation with mlx-lm, one continuous batch per model",
        )
    )


@hookimpl
def mlx_host_register_routes(register: Callable[..., Any]) -> None:
    """The OpenAI-compatible endpoints, one router per area."""
    # Imported here: the routers depend on the host, which loads the plugins.
    from mlx_host.api import chat, completions, health, models, sessions

    for area in (chat, completions, models, sessions, health):
        register(area.router)
