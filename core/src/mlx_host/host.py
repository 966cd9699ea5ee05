"""The assembled server: settings, loaded plugins, their services, keys, models and sessions.

Route handlers (the core's and plugins') reach everything through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from mlx_host import runtime
from mlx_host.errors import ModelLoadError, PluginError
from mlx_host.key_store import open_key_store
from mlx_host.keys import KeyRing
from mlx_host.models.config_file import read_models_file
from mlx_host.models.engine import EngineRegistry
from mlx_host.models.manager import LoadedModel, ModelManager
from mlx_host.models.memory import physical_memory
from mlx_host.models.registry import ModelRegistry
from mlx_host.models.spec import ModelSpec
from mlx_host.plugins import InstalledService, PluginManager
from mlx_host.rate_limits import RateLimiter
from mlx_host.services import CAPABILITY_KINDS, Capability, ServiceSpec
from mlx_host.sessions import SessionStore, open_store
from mlx_host.settings import Settings

EngineInterface = TypeVar("EngineInterface")


@dataclass
class Host:
    """Everything a request needs, built once per app."""

    settings: Settings
    plugins: PluginManager
    services: dict[str, InstalledService]
    keys: KeyRing
    models: ModelManager
    sessions: SessionStore
    limits: RateLimiter

    @classmethod
    def build(cls, settings: Settings, plugins: PluginManager | None = None) -> Host:
        """Load plugins (unless given), register models and keys; raises PluginError on clashes."""
        runtime.choose_blas(settings.blas)
        plugins = plugins or PluginManager(settings.disabled_plugins).load()
        services = {s.spec.name: s for s in plugins.services()}
        registry = ModelRegistry(stand_ins=settings.stand_in_models)
        for spec in plugins.models():
            registry.register(spec)
        if settings.models_file is not None:
            for spec in read_models_file(settings.models_file):
                registry.register(spec)
        for name, source in settings.models.items():
            known = registry.find(name)
            registry.register(
                known.model_copy(update={"source": source})
                if known and known.name == name
                else ModelSpec(name=name, source=source)
            )
        for service in services.values():
            for capability, model in service.spec.default_models.items():
                registry.declare(model, CAPABILITY_KINDS[capability])
        engines = EngineRegistry(plugins.engines(), settings.engines)
        _check_choices(settings, registry, engines)
        store = open_key_store(settings.session_backend, settings.keys_file, settings.redis_url)
        keys = KeyRing({s.spec.key_prefix: name for name, s in services.items()}, store)
        keys.add_all(k.get_secret_value() for k in settings.api_keys)
        manager = ModelManager(
            registry,
            engines,
            settings,
            budget_bytes=settings.memory_budget_bytes
            or physical_memory() - settings.memory_margin_bytes,
        )
        sessions = open_store(
            settings.session_backend, settings.session_ttl_seconds, settings.redis_url
        )
        for setting, named in (("LIMITS", settings.service_limits),
                               ("WEIGHTS", settings.service_weights)):  # fmt: skip
            if unknown := sorted(set(named) - set(services)):
                raise PluginError(
                    f"MLX_HOST_SERVICE_{setting} names services not installed: {unknown}"
                )
        limits = RateLimiter(
            {n: settings.service_limits.get(n, s.spec.policy.limits) for n, s in services.items()},
            settings.session_backend,
            settings.redis_url,
            "mlx-host",
        )
        return cls(settings, plugins, services, keys, manager, sessions, limits)

    async def model_for(
        self, service: ServiceSpec, capability: Capability, requested: str | None = None
    ) -> tuple[str, LoadedModel]:
        """The model a service's request for ``capability`` gets (its default, or the one it
        asks for if its policy allows), loaded: the chosen name and what serves it."""
        name = self.models.registry.choose(service, capability, requested)
        model = await self.models.get(name, CAPABILITY_KINDS[capability])
        return name, model

    async def engine_for(
        self,
        service: ServiceSpec,
        capability: Capability,
        interface: type[EngineInterface],
        requested: str | None = None,
    ) -> tuple[str, LoadedModel, EngineInterface]:
        """As ``model_for``, with the loaded model's engine as the interface the capability
        needs (``Transcriber``, ``Synthesizer``, ...); 503 when it does not offer it."""
        name, model = await self.model_for(service, capability, requested)
        if not isinstance(model.engine, interface):
            raise ModelLoadError(f"The engine of {model.name!r} does not offer {capability}")
        return name, model, model.engine


def _check_choices(settings: Settings, registry: ModelRegistry, engines: EngineRegistry) -> None:
    """Engines and stand-ins named in settings must exist, or the start stops naming them."""
    types = {t.name: t for t in engines.types()}
    for kind, name in settings.engines.items():
        if name not in types or types[name].kind != kind:
            runs = sorted(t.name for t in types.values() if t.kind == kind)
            raise PluginError(
                f"MLX_HOST_ENGINES: no engine {name!r} runs {kind} models here "
                f"(installed for {kind}: {', '.join(runs) or 'none'})"
            )
    for kind, name in settings.stand_in_models.items():
        spec = registry.find(name)
        if spec is None or spec.source is None or spec.kind != kind:
            raise PluginError(
                f"MLX_HOST_STAND_IN_MODELS: {name!r} is not a {kind} model with weights here"
            )
