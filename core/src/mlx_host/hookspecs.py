"""The hooks a service plugin may implement. Each is called once, at server start."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from mlx_host.models.spec import ModelSpec
from mlx_host.services import ServiceSpec

hookspec = pluggy.HookspecMarker("mlx_host")
hookimpl = pluggy.HookimplMarker("mlx_host")


@hookspec
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """Register this plugin's services by calling ``register(ServiceSpec(...))`` once each.

    Called once when the plugin manager loads, before the app is built; returns nothing.
    """


@hookspec
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register model specs (names, aliases, sources) with ``register(ModelSpec(...))``.

    Called once at start, after built-in models and before models from settings, which
    replace any plugin model of the same name; returns nothing.
    """
