"""The memory manager: loads models on demand within one budget, and evicts to make room.

Footprints are measured, not guessed: each model's weights, the KV caches of its running batch
and its prompt cache, plus what MLX holds beyond them (transient buffers, its cache of freed
buffers). Before a load, the estimate is the spec's ``memory_bytes`` or the size of the weight
files; before a request starts, its model claims the KV cache it may grow to (see
``models.memory``). When a load would not fit, idle models are evicted: never one with requests
in flight, never a pinned one; lowest priority first, then least recently used. Concurrent
first requests for one model share a single load, a failed load fails only that model, and a
model whose worker died is started again by its next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from mlx_host.models.memory import MemoryBudget, process_rss
from mlx_host.models.registry import ModelRegistry, Resolved
from mlx_host.models.sources import needs_conversion, prepare, stored_format
from mlx_host.models.spec import ModelSpec

if TYPE_CHECKING:
    from mlx_host.engine.scheduler import BatchScheduler

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
GiB = 1024**3


def weight_file_bytes(path: Path) -> int:
    """Size of a model directory's weight files: the estimate of its memory before loading."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@dataclass
class LoadedModel:
    """A model in memory: the specs it serves (several registry names may share one
    directory), the directory it was loaded from and its scheduler."""

    specs: list[ModelSpec]
    path: Path
    weight_format: str
    scheduler: BatchScheduler
    tokenizer: Any
    context_length: int | None = None
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    @property
    def spec(self) -> ModelSpec:
        """The spec it was loaded for."""
        return self.specs[0]

    @property
    def name(self) -> str:
        """The registry name it was loaded for."""
        return self.spec.name

    @property
    def pinned(self) -> bool:
        """Never evicted, if any name it serves is pinned."""
        return any(s.pinned for s in self.specs)

    @property
    def priority(self) -> int:
        """The highest priority of the names it serves."""
        return max(s.priority for s in self.specs)

    @property
    def memory_bytes(self) -> int:
        """Measured: weights, the KV caches of its running batch and its prompt cache."""
        s = self.scheduler
        return s.weight_bytes + s.kv_bytes + s.prompt_cache_bytes

    @property
    def held_outside_claims(self) -> int:
        """What it holds beyond the KV caches its running requests have claimed."""
        return self.scheduler.weight_bytes + self.scheduler.prompt_cache_bytes

    @property
    def busy(self) -> bool:
        """Requests are in flight (such a model is never evicted)."""
        return self.scheduler.active_requests > 0

    @property
    def state(self) -> str:
        """``ready``, or ``failed`` when its worker died (its next request restarts it)."""
        return self.scheduler.state

    def describe(self) -> dict[str, Any]:
        """Its measured memory and state, for the memory report."""
        s = self.scheduler
        return {
            "name": self.name,
            "names": [spec.name for spec in self.specs],
            "state": self.state,
            "memory_bytes": self.memory_bytes,
            "weight_bytes": s.weight_bytes,
            "kv_cache_bytes": s.kv_bytes,
            "kv_claimed_bytes": s.kv_claimed_bytes,
            "prompt_cache_bytes": s.prompt_cache_bytes,
            "kv_bytes_per_token": s.kv_bytes_per_token,
            "running_requests": s.running_requests,
            "queued_requests": max(0, s.active_requests - s.running_requests),
            "pinned": self.pinned,
            "priority": self.priority,
            "last_used": self.last_used,
        }


def _describe_holder(model: LoadedModel) -> str:
    why = "pinned" if model.pinned else f"{model.scheduler.active_requests} in flight"
    return f"{model.name} ({model.memory_bytes / GiB:.2f} GiB, {why})"


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
        mlx_cache_limit_bytes: int,
    ) -> None:
        self.registry = registry
        self.budget = MemoryBudget(budget_bytes, self._held_outside_claims)
        self.loads = 0  # completed loads, for status and tests
        self.restarts = 0  # models started again after their worker died
        self._cache_dir = cache_dir
        self._weight_format_setting = weight_format
        self._scheduler_options = scheduler_options
        self._mlx_cache_limit = mlx_cache_limit_bytes
        self._loaded: dict[str, LoadedModel] = {}  # by registry name; shared loads repeat
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._reserved: dict[str, int] = {}  # estimates of loads in progress
        self._room = asyncio.Lock()

    @property
    def budget_bytes(self) -> int:
        """Bytes all loaded models may use."""
        return self.budget.total_bytes

    def weight_format_for(self, spec: ModelSpec | None = None) -> str:
        """The format a model is converted to on this device (its own override first)."""
        from mlx_host.engine.device import preferred_weight_format

        setting = (spec and spec.weight_format) or self._weight_format_setting
        return preferred_weight_format(setting)

    def planned_format(self, spec: ModelSpec) -> str:
        """What a model's weights will be once loaded: converted, or as stored."""
        try:
            if spec.source is None:
                return "unavailable"
            if needs_conversion(spec.source):
                return self.weight_format_for(spec)
            return stored_format(Path(spec.source).expanduser())
        except ModelLoadError:
            return "unavailable"

    @property
    def weight_format(self) -> str:
        """The server-wide format converted models are stored in on this device."""
        return self.weight_format_for()

    def loaded(self) -> list[LoadedModel]:
        """Models currently in memory (each once, however many names it serves)."""
        return list({id(m): m for m in list(self._loaded.values())}.values())

    def get_loaded(self, name: str) -> LoadedModel | None:
        """The loaded model registered as ``name`` (not an alias), if any."""
        return self._loaded.get(name)

    # -- memory -------------------------------------------------------------------------

    def _mlx_held(self) -> tuple[int, int]:
        """Bytes of live MLX arrays and of MLX's cache of freed buffers (0, 0 before any
        model has loaded MLX)."""
        if not self._loaded:
            return 0, 0
        from mlx_host.engine import memory

        return memory.held()

    def _held_outside_claims(self) -> int:
        """Measured bytes that no KV claim covers: weights, prompt caches, MLX memory beyond
        what the models account for (transient buffers, freed buffers kept for reuse), and
        the estimates of loads in progress. Called from worker threads too."""
        models = self.loaded()
        active, cached = self._mlx_held()
        accounted = sum(m.memory_bytes for m in models)
        return (
            sum(m.held_outside_claims for m in models)
            + max(0, active - accounted)
            + cached
            + sum(list(self._reserved.values()))
        )

    def used_bytes(self) -> int:
        """Measured bytes held for the models now: weights, KV and prompt caches, and what
        MLX holds beyond them (transient and cached buffers)."""
        return self._used(self.loaded(), *self._mlx_held())

    @staticmethod
    def _used(models: list[LoadedModel], active: int, cached: int) -> int:
        return max(sum(m.memory_bytes for m in models), active) + cached

    def committed_bytes(self) -> int:
        """What the budget is checked against: held bytes plus the KV caches admitted requests
        may still grow to, plus loads in progress."""
        return self.budget.committed_bytes()

    def usage(self) -> dict[str, Any]:
        """Budget, use and every loaded model's share, for the memory endpoint."""
        # MLX's figures and RSS are read back to back: a batch's buffers change by the step.
        active, cached = self._mlx_held()
        rss = process_rss()
        models = self.loaded()
        committed = self.committed_bytes()
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": self._used(models, active, cached),
            "committed_bytes": committed,
            "free_bytes": self.budget_bytes - committed,
            "kv_claimed_bytes": self.budget.claimed_bytes,
            "kv_claimed_peak_bytes": self.budget.peak_claimed_bytes,
            "process": {
                "rss_bytes": rss,
                "mlx_active_bytes": active,
                "mlx_cache_bytes": cached,
                "mlx_cache_limit_bytes": self._mlx_cache_limit,
            },
            "models": [m.describe() for m in models],
            "loading": [{"name": n, "reserved_bytes": b} for n, b in self._reserved.items()],
        }

    # -- loading ------------------------------------------------------------------------

    async def get_llm(self, name: str) -> tuple[Resolved, LoadedModel]:
        """The loaded chat model serving ``name``, loading it (again, if its worker died)."""
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
        model = self._loaded.get(spec.name)
        if model is not None and model.state == "failed":
            logger.warning("restarting %s: its worker stopped", model.name)
            self.restarts += 1
            await self._unload(model)
            model = None
        if model is not None:
            return model
        task = self._loading.get(spec.name)
        if task is None:
            task = asyncio.create_task(self._load(spec))
            self._loading[spec.name] = task
            task.add_done_callback(lambda _: self._loading.pop(spec.name, None))
        return await asyncio.shield(task)

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        from mlx_host.engine import memory
        from mlx_host.engine.scheduler import BatchScheduler

        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        fmt = self.weight_format_for(spec)
        try:
            path = await asyncio.to_thread(prepare, spec.source, self._cache_dir, fmt)
        except ModelLoadError as exc:  # its message names server paths: for the log only
            logger.error("cannot prepare %s: %s", spec.name, exc.message)
            raise ModelLoadError(
                f"The model {spec.name!r} could not be loaded (see the server log)"
            ) from exc
        shared = next((m for m in self.loaded() if m.path.resolve() == path.resolve()), None)
        if shared is not None:  # another name for a directory already in memory
            logger.info("%s shares the loaded %s (same weights)", spec.name, shared.name)
            shared.specs.append(spec)
            self._loaded[spec.name] = shared
            return shared
        # prepare() writes conversions under the cache; anything else is served as stored.
        converted = path.is_relative_to(self._cache_dir / "models")
        stored = fmt if converted else stored_format(path)
        logger.info("loading %s from %s (%s)", spec.name, spec.source, stored)
        memory.set_buffer_cache_limit(self._mlx_cache_limit)
        estimate = spec.memory_bytes or weight_file_bytes(path)
        async with self._room:
            await self._make_room(spec.name, estimate)
            self._reserved[spec.name] = estimate
        try:
            scheduler = BatchScheduler(
                path, name=spec.name, claim=self.budget.claim(), **self._scheduler_options
            )
            tokenizer = await asyncio.wrap_future(scheduler.start())
        finally:
            del self._reserved[spec.name]
        config = json.loads((path / "config.json").read_text())
        context = spec.context_length or config.get("max_position_embeddings")
        model = LoadedModel([spec], path, stored, scheduler, tokenizer, context)
        self._loaded[spec.name] = model
        self.loads += 1
        logger.info("loaded %s (%.2f GiB)", spec.name, model.memory_bytes / GiB)
        return model

    async def _make_room(self, name: str, needed: int) -> None:
        """Evict idle, unpinned models (lowest priority, then least recently used) until
        ``needed`` bytes fit; 503 with Retry-After when they cannot."""
        free = self.budget_bytes - self.committed_bytes()
        if free >= needed:
            return
        candidates = sorted(
            (m for m in self.loaded() if not m.pinned and not m.busy),
            key=lambda m: (m.priority, m.last_used),
        )
        victims = []
        for model in candidates:
            if free >= needed:
                break
            victims.append(model)
            free += model.memory_bytes
        if free < needed:
            holders = [_describe_holder(m) for m in self.loaded() if m not in victims]
            raise ServiceUnavailableError(
                f"Not enough memory to load {name!r}: it needs {needed / GiB:.2f} GiB, the "
                f"budget is {self.budget_bytes / GiB:.2f} GiB, held by "
                f"{', '.join(holders) or 'models still loading'}",
                code="insufficient_memory",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        for model in victims:
            logger.info("evicting %s to make room for %s", model.name, name)
            await self._unload(model)

    async def unload(self, name: str) -> LoadedModel:
        """Unload a model now (management): 404 when not loaded, 409 while requests run, 400
        for a name served by the stand-in (which every service without its model shares)."""
        resolved = self.registry.resolve(name)
        if resolved.stand_in:
            raise InvalidRequestError(
                f"The model {name!r} has no weights here: it is served by the stand-in "
                f"{resolved.spec.name!r}, which other names share. Unload "
                f"{resolved.spec.name!r} by its own name if that is what you mean",
                param="model",
                code="stand_in_model",
            )
        model = self._loaded.get(resolved.spec.name)
        if model is None:
            raise NotFoundError(f"The model {name!r} is not loaded", code="model_not_loaded")
        if model.busy:
            raise ConflictError(f"The model {name!r} has requests in flight")
        await self._unload(model)
        return model

    async def _unload(self, model: LoadedModel, wait_seconds: float = 10.0) -> None:
        for spec in model.specs:
            self._loaded.pop(spec.name, None)
        model.scheduler.stop_accepting()
        await asyncio.to_thread(model.scheduler.close, wait_seconds)

    async def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload models idle for longer than their TTL; returns their names."""
        now = time.time() if now is None else now
        expired = [
            m
            for m in self.loaded()
            if m.spec.idle_ttl_seconds and not m.busy
            and now - m.last_used > m.spec.idle_ttl_seconds
        ]  # fmt: skip
        for model in expired:
            logger.info("unloading %s after %.0f s idle", model.name, now - model.last_used)
            await self._unload(model)
        return [m.name for m in expired]

    async def auto_load(self) -> None:
        """Load every ``auto_load`` model, highest priority first; failures are logged only."""
        specs = [s for s in self.registry.specs() if s.auto_load and s.source]
        for spec in sorted(specs, key=lambda s: -s.priority):
            try:
                await self.load(spec)
            except ServiceUnavailableError as exc:
                logger.error("auto_load of %s failed: %s", spec.name, exc.message)

    async def close(self, wait_seconds: float = 10.0) -> None:
        """Stop every model's worker; one stuck in a step is left behind after
        ``wait_seconds``, so that shutting down never hangs."""
        models = self.loaded()
        await asyncio.gather(*(self._unload(m, wait_seconds) for m in models))
