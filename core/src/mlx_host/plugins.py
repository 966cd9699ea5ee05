"""A typed facade over pluggy: loads service plugins and collects what they register.

Callers use this class, never ``pm.hook`` directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from mlx_host import builtins, hookspecs
from mlx_host.errors import PluginError
from mlx_host.models.spec import ModelSpec
from mlx_host.services import ServiceSpec

ENTRY_POINT_GROUP = "mlx_host.services"
BUILTIN = "mlx_host.builtins"


@dataclass(frozen=True)
class InstalledService:
    """A registered service and the distribution that brought it."""

    spec: ServiceSpec
    plugin: str
    distribution: str
    version: str


class PluginManager:
    """Loads plugins from entry points (minus disabled ones), then the built-ins."""

    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager("mlx_host")
        self._pm.add_hookspecs(hookspecs)
        self._disabled = set(disabled)
        self._origin: dict[str, tuple[str, str]] = {}

    def load(self, *, discover: bool = True) -> PluginManager:
        """Load every enabled entry point of ``mlx_host.services`` (unless ``discover`` is
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
        self.register(builtins, BUILTIN, "mlx-host", _core_version())
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

    def services(self) -> list[InstalledService]:
        """Every registered service, checked: unique names, no prefix overlapping another."""
        found: list[InstalledService] = []
        for impl in self._pm.hook.mlx_host_register_services.get_hookimpls():
            dist, version = self._origin.get(impl.plugin_name, ("(unknown)", ""))

            def register(
                spec: ServiceSpec, _origin: tuple[str, str, str] = (impl.plugin_name, dist, version)
            ) -> None:
                found.append(InstalledService(spec, *_origin))

            try:
                impl.function(register=register)
            except Exception as exc:  # e.g. a ServiceSpec with a bad prefix
                raise PluginError(
                    f"plugin {impl.plugin_name!r} from distribution {dist} could not register "
                    f"its services: {exc}"
                ) from exc
        _check_unique(found)
        return found

    def models(self) -> list[ModelSpec]:
        """Every model spec the plugins register, built-ins first."""
        specs: list[ModelSpec] = []
        # pluggy calls the last registered plugin first: the built-ins, then the others.
        self._pm.hook.mlx_host_register_models(register=specs.append)
        return specs


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


def _core_version() -> str:
    from importlib.metadata import version

    return version("mlx-host")
