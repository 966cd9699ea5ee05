"""The hooks a plugin may implement. Each is called once per process, when the server (or the
CLI) starts, and registers things through the callback it is given."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from mlx_host.models.engine import EngineType
    from mlx_host.models.spec import ModelSpec
    from mlx_host.services import ServiceSpec

hookspec = pluggy.HookspecMarker("mlx_host")
hookimpl = pluggy.HookimplMarker("mlx_host")


@hookspec
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """Register this plugin's services by calling ``register(ServiceSpec(...))`` once each.

    Called once when the server starts, before keys are read; returns nothing.
    """


@hookspec
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register model specs (names, aliases, sources, kinds) with ``register(ModelSpec(...))``.

    Called once when the server starts, after the built-in models and before models from
    settings, which replace any plugin model of the same name; returns nothing.
    """


@hookspec
def mlx_host_register_engines(register: Callable[[EngineType], None]) -> None:
    """Register engine types with ``register(EngineType(...))``: what runs models of a kind.

    Called once when the server starts, after the core's own engines; returns nothing.
    """


@hookspec
def mlx_host_register_routes(register: Callable[..., None]) -> None:
    """Register routers with ``register(router, service=None)``: each is mounted under
    ``/v1`` and ``/api/v1``; with ``service``, only that service's keys may call it.

    Called once when the app is built, after the core's own routes; returns nothing.
    """


@hookspec
def mlx_host_register_commands(cli: typer.Typer) -> None:
    """Add subcommands to the ``mlx-host`` command with ``@cli.command()``.

    Called once when the command starts, before it parses its arguments; returns nothing.
    """
