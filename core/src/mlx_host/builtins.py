"""The core's own contributions, registered like any plugin's (as in pluggy's eggsample)."""

from __future__ import annotations

from collections.abc import Callable

from mlx_host.hookspecs import hookimpl
from mlx_host.models.spec import EMBEDDED_LLM, ModelSpec


@hookimpl
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """The embedded default LLM, which works on a fresh machine with no model hub."""
    register(EMBEDDED_LLM)
