"""The assembled server: settings, loaded plugins, their services, keys and models."""

from __future__ import annotations

from dataclasses import dataclass

from mlx_host.keys import KeyRing
from mlx_host.models.config_file import read_models_file
from mlx_host.models.manager import ModelManager
from mlx_host.models.memory import physical_memory
from mlx_host.models.registry import ModelRegistry
from mlx_host.models.spec import ModelSpec
from mlx_host.plugins import InstalledService, PluginManager
from mlx_host.sessions import SessionStore, open_store
from mlx_host.settings import Settings


@dataclass
class Host:
    """Everything a request needs, built once per app."""

    settings: Settings
    services: dict[str, InstalledService]
    keys: KeyRing
    models: ModelManager
    sessions: SessionStore

    @classmethod
    def build(cls, settings: Settings, plugins: PluginManager | None = None) -> Host:
        """Load plugins (unless given), register models and keys; raises PluginError on clashes."""
        plugins = plugins or PluginManager(settings.disabled_plugins).load()
        services = {s.spec.name: s for s in plugins.services()}
        registry = ModelRegistry(stand_in=settings.stand_in_model)
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
            registry.declare(service.spec.default_model)
        keys = KeyRing({s.spec.key_prefix: name for name, s in services.items()})
        keys.add_all(k.get_secret_value() for k in settings.api_keys)
        manager = ModelManager(
            registry,
            cache_dir=settings.cache_dir,
            weight_format=settings.weight_format,
            scheduler_options={
                "max_batch_size": settings.max_batch_size,
                "max_queued": settings.max_queued_requests,
                "prompt_cache_bytes": settings.prompt_cache_bytes,
            },
            budget_bytes=settings.memory_budget_bytes
            or physical_memory() - settings.memory_margin_bytes,
            mlx_cache_limit_bytes=settings.mlx_cache_limit_bytes,
        )
        sessions = open_store(
            settings.session_backend, settings.session_ttl_seconds, settings.redis_url
        )
        return cls(settings, services, keys, manager, sessions)
