"""The core's own contributions, registered through the same hooks as any plugin's (as in
pluggy's eggsample and tox's built-in runners)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlx_host.hookspecs import hookimpl
from mlx_host.models.engine import EngineType
from mlx_host.models.spec import EMBEDDED_LLM, EMBEDDED_STT, ModelSpec


@hookimpl
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """The embedded defaults, which work on a fresh machine with no model hub."""
    register(EMBEDDED_LLM)
    register(EMBEDDED_STT)


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
    register(
        EngineType(
            name="mlx-whisper",
            kind="stt",
            engine="mlx_host.engine.stt:WhisperEngine",
            requires=("mlx_whisper", "av"),
            install_hint="pip install 'mlx-host[stt]'",
            description="Speech to text with Whisper on MLX, in 30-second windows",
        )
    )


@hookimpl
def mlx_host_register_routes(register: Callable[..., Any]) -> None:
    """The OpenAI-compatible endpoints, one router per area."""
    # Imported here: the routers depend on the host, which loads the plugins.
    from mlx_host.api import audio, chat, completions, health, models, sessions

    for area in (chat, completions, audio, models, sessions, health):
        register(area.router)
