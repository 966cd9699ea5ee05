"""The memory manager: loads models on demand within one budget, and evicts to make room.

Footprints are measured after loading (weights plus the KV caches the model's batch holds),
not guessed; before a load, the estimate is the spec's ``memory_bytes`` or the size of the
weight files. When a load would not fit, idle models are evicted: never one with requests in
flight, never a pinned one; lowest priority first, then least recently used. Concurrent first
requests for one model share a single load, and a failed load fails only that model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_host.errors import (
    ConflictError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    ServiceUnavailableError,
)
from mlx_host.models.registry import ModelRegistry, Resolved
from mlx_host.models.sources import needs_conversion, prepare
from mlx_host.models.spec import ModelSpec

if TYPE_CHECKING:
    from mlx_host.engine.scheduler import BatchScheduler

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
GiB = 1024**3


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def weight_file_bytes(path: Path) -> int:
    """Size of a model directory's weight files: the estimate of its memory before loading."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@dataclass
class LoadedModel:
    """A model in memory: its spec, the directory it was loaded from and its scheduler."""

    spec: ModelSpec
    path: Path
    weight_format: str
    scheduler: BatchScheduler
    tokenizer: Any
    context_length: int | None = None
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    @property
    def memory_bytes(self) -> int:
        """Measured footprint: weights plus the KV caches of requests in its batch."""
        return self.scheduler.weight_bytes + self.scheduler.cache_bytes

    @property
    def busy(self) -> bool:
        """Requests are in flight (such a model is never evicted)."""
        return self.scheduler.active_requests > 0


def _describe_holder(model: LoadedModel) -> str:
    why = "pinned" if model.spec.pinned else f"{model.scheduler.active_requests} in flight"
    return f"{model.spec.name} ({model.memory_bytes / GiB:.2f} GiB, {why})"


class ModelManager:
    """The loaded models of one server process, within ``budget_bytes``."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        cache_dir: Path,
        weight_format: str,
        scheduler_options: dict[str, int],
        budget_bytes: int,
    ) -> None:
        self.registry = registry
        self.budget_bytes = budget_bytes
        self.loads = 0  # completed loads, for status and tests
        self._cache_dir = cache_dir
        self._weight_format_setting = weight_format
        self._scheduler_options = scheduler_options
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._reserved: dict[str, int] = {}  # estimates of loads in progress
        self._room = asyncio.Lock()

    def weight_format_for(self, spec: ModelSpec | None = None) -> str:
        """The format a model is converted to on this device (its own override first)."""
        from mlx_host.engine.device import preferred_weight_format

        setting = (spec and spec.weight_format) or self._weight_format_setting
        return preferred_weight_format(setting)

    def planned_format(self, spec: ModelSpec) -> str:
        """What a model's weights will be once loaded: converted, or as stored."""
        try:
            convert = spec.source is not None and needs_conversion(spec.source)
        except ModelLoadError:
            return "unavailable"
        return self.weight_format_for(spec) if convert else "as stored"

    @property
    def weight_format(self) -> str:
        """The server-wide format converted models are stored in on this device."""
        return self.weight_format_for()

    def loaded(self) -> list[LoadedModel]:
        """Models currently in memory."""
        return list(self._loaded.values())

    def get_loaded(self, name: str) -> LoadedModel | None:
        """The loaded model registered as ``name`` (not an alias), if any."""
        return self._loaded.get(name)

    def used_bytes(self) -> int:
        """Measured bytes of loaded models plus the estimates of loads in progress."""
        return sum(m.memory_bytes for m in self._loaded.values()) + sum(self._reserved.values())

    def usage(self) -> dict[str, Any]:
        """Budget, use and every loaded model's share, for the memory endpoint."""
        used = self.used_bytes()
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": used,
            "free_bytes": self.budget_bytes - used,
            "models": [
                {
                    "name": m.spec.name,
                    "memory_bytes": m.memory_bytes,
                    "weight_bytes": m.scheduler.weight_bytes,
                    "cache_bytes": m.scheduler.cache_bytes,
                    "active_requests": m.scheduler.active_requests,
                    "pinned": m.spec.pinned,
                    "priority": m.spec.priority,
                    "last_used": m.last_used,
                }
                for m in self._loaded.values()
            ],
            "loading": [{"name": n, "reserved_bytes": b} for n, b in self._reserved.items()],
        }

    async def get_llm(self, name: str) -> tuple[Resolved, LoadedModel]:
        """The loaded chat model serving ``name``, loading it first if needed."""
        resolved = self.registry.resolve(name)
        if resolved.spec.kind != "llm":
            raise InvalidRequestError(
                f"The model {name!r} is a {resolved.spec.kind} model, not a chat model",
                param="model",
                code="model_not_supported",
            )
        model = await self.load(resolved.spec)
        model.last_used = time.time()
        return resolved, model

    async def load(self, spec: ModelSpec) -> LoadedModel:
        """Load ``spec`` once; callers that arrive during the load wait for the same one."""
        if spec.name in self._loaded:
            return self._loaded[spec.name]
        task = self._loading.get(spec.name)
        if task is None:
            task = asyncio.create_task(self._load(spec))
            self._loading[spec.name] = task
            task.add_done_callback(lambda _: self._loading.pop(spec.name, None))
        return await asyncio.shield(task)

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        from mlx_host.engine.scheduler import BatchScheduler

        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        fmt = self.weight_format_for(spec)
        logger.info("loading %s from %s (%s)", spec.name, spec.source, fmt)
        path = await asyncio.to_thread(prepare, spec.source, self._cache_dir, fmt)
        estimate = spec.memory_bytes or weight_file_bytes(path)
        async with self._room:
            await self._make_room(spec.name, estimate)
            self._reserved[spec.name] = estimate
        try:
            scheduler = BatchScheduler(path, name=spec.name, **self._scheduler_options)
            tokenizer = await asyncio.wrap_future(scheduler.start())
        finally:
            del self._reserved[spec.name]
        config = json.loads((path / "config.json").read_text())
        # prepare() writes conversions under the cache; anything else is served as stored.
        stored = fmt if path.is_relative_to(self._cache_dir / "models") else "as stored"
        context = spec.context_length or config.get("max_position_embeddings")
        model = LoadedModel(spec, path, stored, scheduler, tokenizer, context)
        self._loaded[spec.name] = model
        self.loads += 1
        logger.info("loaded %s (%.2f GiB)", spec.name, model.memory_bytes / GiB)
        return model

    async def _make_room(self, name: str, needed: int) -> None:
        """Evict idle, unpinned models (lowest priority, then least recently used) until
        ``needed`` bytes fit; 503 with Retry-After when they cannot."""
        free = self.budget_bytes - self.used_bytes()
        if free >= needed:
            return
        candidates = sorted(
            (m for m in self._loaded.values() if not m.spec.pinned and not m.busy),
            key=lambda m: (m.spec.priority, m.last_used),
        )
        victims = []
        for model in candidates:
            if free >= needed:
                break
            victims.append(model)
            free += model.memory_bytes
        if free < needed:
            holders = [_describe_holder(m) for m in self._loaded.values() if m not in victims]
            raise ServiceUnavailableError(
                f"Not enough memory to load {name!r}: it needs {needed / GiB:.2f} GiB, the "
                f"budget is {self.budget_bytes / GiB:.2f} GiB, held by "
                f"{', '.join(holders) or 'models still loading'}",
                code="insufficient_memory",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        for model in victims:
            logger.info("evicting %s to make room for %s", model.spec.name, name)
            await self._unload(model)

    async def unload(self, name: str) -> LoadedModel:
        """Unload a model now (management): 404 when not loaded, 409 while requests run."""
        model = self._loaded.get(self.registry.resolve(name).spec.name)
        if model is None:
            raise NotFoundError(f"The model {name!r} is not loaded", code="model_not_loaded")
        if model.busy:
            raise ConflictError(f"The model {name!r} has requests in flight")
        await self._unload(model)
        return model

    async def _unload(self, model: LoadedModel) -> None:
        del self._loaded[model.spec.name]
        model.scheduler.stop_accepting()
        await asyncio.to_thread(model.scheduler.close)

    async def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload models idle for longer than their TTL; returns their names."""
        now = time.time() if now is None else now
        expired = [
            m
            for m in self._loaded.values()
            if m.spec.idle_ttl_seconds and not m.busy
            and now - m.last_used > m.spec.idle_ttl_seconds
        ]  # fmt: skip
        for model in expired:
            logger.info("unloading %s after %.0f s idle", model.spec.name, now - model.last_used)
            await self._unload(model)
        return [m.spec.name for m in expired]

    async def auto_load(self) -> None:
        """Load every ``auto_load`` model, highest priority first; failures are logged only."""
        specs = [s for s in self.registry.specs() if s.auto_load and s.source]
        for spec in sorted(specs, key=lambda s: -s.priority):
            try:
                await self.load(spec)
            except ServiceUnavailableError as exc:
                logger.error("auto_load of %s failed: %s", spec.name, exc.message)

    async def close(self) -> None:
        """Stop every model's worker."""
        for model in list(self._loaded.values()):
            await self._unload(model)
