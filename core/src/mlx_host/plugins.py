"""A typed facade over pluggy: loads plugins and collects, once, what they register.

Callers use this class, never ``pm.hook`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points, version
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from mlx_host import builtins, hookspecs
from mlx_host.errors import PluginError
from mlx_host.models.engine import EngineType
from mlx_host.models.spec import ModelSpec
from mlx_host.services import ServiceSpec

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter

#: The entry-point group plugin distributions declare: services, models, engines, routes and
#: commands all come through it.
ENTRY_POINT_GROUP = "mlx_host"
BUILTIN = "mlx_host.builtins"


@dataclass(frozen=True)
class InstalledService:
    """A registered service and the distribution that brought it."""

    spec: ServiceSpec
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginRoute:
    """A router a plugin registered, and the one service allowed to call it (if any)."""

    router: APIRouter
    service: str | None
    plugin: str


class PluginManager:
    """Loads plugins from entry points (minus disabled ones), then the built-ins; each hook's
    registrations are collected on first use and kept."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager("mlx_host")
        self._pm.add_hookspecs(hookspecs)
        self._disabled = set(disabled)
        self._origin: dict[str, tuple[str, str]] = {}
        self._collected: dict[str, list[Any]] = {}

    def load(self, *, discover: bool = True) -> PluginManager:
        """Load every enabled entry point of the ``mlx_host`` group (unless ``discover`` is
        false), then the built-ins."""
        for ep in entry_points(group=ENTRY_POINT_GROUP) if discover else ():
            if ep.name in self._disabled or self._pm.has_plugin(ep.name):
                continue
            dist = ep.dist
            origin = (dist.name, dist.version) if dist else ("(unknown)", "")
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {origin[0]} failed to import: {exc}"
                ) from exc
            self.register(module, ep.name, *origin)
        self.register(builtins, BUILTIN, "mlx-host", version("mlx-host"))
        self._pm.check_pending()
        return self

    def register(
        self, plugin: ModuleType | object, name: str, distribution: str, version: str = ""
    ) -> None:
        """Register a plugin object directly (tests and embedders use this)."""
        self._pm.register(plugin, name=name)
        self._origin[name] = (distribution, version)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins."""
        return [name for name, _ in self._pm.list_name_plugin()]

    def _collect(
        self, hook: str, wrap: Callable[..., Any] = lambda _plugin, item: item
    ) -> list[Any]:
        """What every implementation of ``hook`` registers (each call of ``register`` made
        into an item by ``wrap(plugin, *args)``), in call order, the built-ins first. Each
        implementation runs once, and a failing one names its plugin."""
        if hook not in self._collected:
            found: list[Any] = []
            for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls()):
                dist = self._origin.get(impl.plugin_name, ("(unknown)", ""))[0]

                def register(*args: Any, _plugin: str = impl.plugin_name, **kwargs: Any) -> None:
                    found.append(wrap(_plugin, *args, **kwargs))

                try:
                    impl.function(register=register)
                except Exception as exc:  # e.g. a ServiceSpec with a bad prefix
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} from distribution {dist} failed in "
                        f"{hook}: {exc}"
                    ) from exc
            self._collected[hook] = found
        return list(self._collected[hook])

    def services(self) -> list[InstalledService]:
        """Every registered service, checked: unique names, no prefix overlapping another."""

        def installed(plugin: str, spec: ServiceSpec) -> InstalledService:
            return InstalledService(spec, plugin, *self._origin.get(plugin, ("(unknown)", "")))

        found: list[InstalledService] = self._collect("mlx_host_register_services", installed)
        _check_unique(found)
        return found

    def models(self) -> list[ModelSpec]:
        """Every model spec the plugins register, built-ins first."""
        return self._collect("mlx_host_register_models")

    def engines(self) -> list[EngineType]:
        """Every engine type, the core's first; two of one name stop the start."""
        found: list[EngineType] = self._collect("mlx_host_register_engines")
        names = [e.name for e in found]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise PluginError(f"engine types registered twice: {', '.join(duplicates)}")
        return found

    def routes(self) -> list[PluginRoute]:
        """Every router to mount, the core's first."""

        def route(plugin: str, router: APIRouter, service: str | None = None) -> PluginRoute:
            return PluginRoute(router, service, plugin)

        return self._collect("mlx_host_register_routes", route)

    def add_commands(self, cli: typer.Typer) -> None:
        """Let every plugin add its subcommands to ``cli`` (a failing one names its plugin)."""
        for impl in reversed(self._pm.hook.mlx_host_register_commands.get_hookimpls()):
            try:
                impl.function(cli=cli)
            except Exception as exc:
                dist = self._origin.get(impl.plugin_name, ("(unknown)", ""))[0]
                raise PluginError(
                    f"plugin {impl.plugin_name!r} from distribution {dist} failed in "
                    f"mlx_host_register_commands: {exc}"
                ) from exc


def _check_unique(services: list[InstalledService]) -> None:
    for i, a in enumerate(services):
        for b in services[i + 1 :]:
            pa, pb = a.spec.key_prefix, b.spec.key_prefix
            if a.spec.name == b.spec.name or pa.startswith(pb) or pb.startswith(pa):
                raise PluginError(
                    f"services {a.spec.name!r} (prefix {pa!r}, distribution {a.distribution}) "
                    f"and {b.spec.name!r} (prefix {pb!r}, distribution {b.distribution}) "
                    "clash: service names and key prefixes must be unique and no prefix may "
                    "start another"
                )
