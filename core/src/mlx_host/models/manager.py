"""The memory manager: loads models of every kind on demand within one budget, and evicts to
make room.

It drives each model through its engine (``models.engine``). Footprints are measured, not
guessed: what each engine holds, plus what MLX holds beyond the models (transient buffers, its
cache of freed buffers). Before a load, the estimate is the spec's ``memory_bytes`` or the
engine's estimate; before a request starts, an LLM claims the KV cache it may grow to (see
``models.memory``). When a load would not fit, idle models are evicted: never one with requests
in flight, never a pinned one; lowest priority first, then least recently used. Concurrent
first requests for one model share a single load, a failed load fails only that model, and a
model whose engine failed is started again by its next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_host.errors import (
    ConflictError,
    InvalidRequestError,
    MLXHostError,
    ModelFilesMissingError,
    ModelLoadError,
    NotFoundError,
    ServiceUnavailableError,
)
from mlx_host.models.engine import Engine, EngineRegistry, PreparedModel
from mlx_host.models.memory import MemoryBudget, process_memory
from mlx_host.models.registry import ModelRegistry
from mlx_host.models.spec import ModelSpec
from mlx_host.runtime.threads import run_in_pooled_thread

if TYPE_CHECKING:
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
GiB = 1024**3
_SNAPSHOT_TRIES = 5
_SNAPSHOT_STEADY_BYTES = 8 * 1024**2


@dataclass
class LoadedModel:
    """A model in memory: the specs it serves (several registry names may share one
    directory) and the engine running it."""

    specs: list[ModelSpec]
    engine: Engine
    engine_name: str
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    holds: int = 0  # work that uses it in turns keeps it loaded between requests (held())

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the model loaded while inside, between its requests too: for work that uses
        several models in turn (a voice turn transcribes, then answers, then speaks), whose
        models must not be evicted for one another. Enter it right after loading."""
        self.holds += 1
        try:
            yield
        finally:
            self.holds -= 1
            self.last_used = time.time()

    @property
    def spec(self) -> ModelSpec:
        """The spec it was loaded for."""
        return self.specs[0]

    @property
    def name(self) -> str:
        """The registry name it was loaded for."""
        return self.spec.name

    @property
    def names(self) -> list[str]:
        """Every registry name it serves."""
        return [s.name for s in self.specs]

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
        """Measured bytes its engine holds."""
        return self.engine.memory_bytes

    @property
    def busy(self) -> bool:
        """Requests are in flight, or it is held (such a model is never evicted)."""
        return self.engine.busy or self.holds > 0

    @property
    def state(self) -> str:
        """``ready``, or ``failed`` when its engine failed (its next request restarts it)."""
        return self.engine.state

    def describe(self) -> dict[str, Any]:
        """Its kind, engine, state and measured memory, for the memory report."""
        return {
            "name": self.name,
            "names": self.names,
            "kind": self.spec.kind,
            "engine": self.engine_name,
            "state": self.state,
            "memory_bytes": self.memory_bytes,
            "weight_format": self.engine.prepared.weight_format,
            **self.engine.describe(),
            "pinned": self.pinned,
            "priority": self.priority,
            "last_used": self.last_used,
        }


def _describe_holder(model: LoadedModel) -> str:
    why = "pinned" if model.pinned else "in use"
    return f"{model.name} ({model.memory_bytes / GiB:.2f} GiB, {why})"


class ModelManager:
    """The loaded models of one server process, within ``budget_bytes``."""

    def __init__(
        self,
        registry: ModelRegistry,
        engines: EngineRegistry,
        settings: Settings,
        *,
        budget_bytes: int,
    ) -> None:
        self.registry = registry
        self.engines = engines
        self.settings = settings
        self.budget = MemoryBudget(budget_bytes, self._held_outside_claims)
        self.budget.relieve = self._relieve
        self.loads = 0  # completed loads, for status, metrics and tests
        self.evictions = 0  # idle models unloaded to make room
        self.load_seconds = 0.0  # time spent in completed loads
        self.restarts = 0  # models started again after their engine failed
        self._loaded: dict[str, LoadedModel] = {}  # by registry name; shared loads repeat
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}  # by registry name
        self._loading_paths: dict[Path, asyncio.Task[LoadedModel]] = {}  # by prepared path
        self._room = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relieving = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def budget_bytes(self) -> int:
        """Bytes all loaded models may use."""
        return self.budget.total_bytes

    def planned_format(self, spec: ModelSpec) -> str:
        """How a model's weights will be held once loaded ("unavailable" without an engine)."""
        try:
            engine = self.engines.for_spec(spec).engine_class()
        except ModelLoadError:
            return "unavailable"
        return engine.planned_format(spec, self.settings)

    def loaded(self) -> list[LoadedModel]:
        """Models currently in memory (each once, however many names it serves)."""
        return list({id(m): m for m in list(self._loaded.values())}.values())

    def get_loaded(self, name: str) -> LoadedModel | None:
        """The loaded model registered as ``name`` (not an alias), if any."""
        return self._loaded.get(name)

    # -- memory -------------------------------------------------------------------------

    def _mlx_held(self, models: list[LoadedModel]) -> tuple[int, int]:
        """Bytes of live MLX arrays and of MLX's cache of freed buffers (0, 0 while no model
        uses MLX)."""
        if not any(m.engine.uses_mlx for m in models):
            return 0, 0
        from mlx_host.engine import memory

        return memory.held()

    @staticmethod
    def _used(models: list[LoadedModel], active: int, cached: int) -> int:
        """Engines' own memory, with MLX's figures standing for the MLX engines' share when
        they are larger (transient and cached buffers)."""
        in_mlx = sum(m.memory_bytes for m in models if m.engine.uses_mlx)
        other = sum(m.memory_bytes for m in models if not m.engine.uses_mlx)
        return other + max(in_mlx, active) + cached

    def _held_outside_claims(self) -> int:
        """Measured bytes that no claim covers. Called from engines' worker threads too."""
        models = self.loaded()
        active, cached = self._mlx_held(models)
        in_claims = sum(m.engine.claimed_in_use_bytes for m in models)
        return self._used(models, active, cached) - in_claims

    def _snapshot(self, models: list[LoadedModel]) -> tuple[int, int, int | None]:
        """MLX's figures and the process's memory, read together: a batch's buffers change by
        the step, so a reading during which the process grew or shrank much is taken again."""
        for _ in range(_SNAPSHOT_TRIES):
            before = process_memory()
            active, cached = self._mlx_held(models)
            after = process_memory()
            if before is None or after is None or abs(after - before) < _SNAPSHOT_STEADY_BYTES:
                break
        return active, cached, after

    def used_bytes(self) -> int:
        """Measured bytes held for the models now."""
        models = self.loaded()
        return self._used(models, *self._mlx_held(models))

    def committed_bytes(self) -> int:
        """What the budget is checked against: held bytes, plus the KV caches admitted requests
        may still grow to, plus loads in progress."""
        return self.budget.committed_bytes()

    def usage(self) -> dict[str, Any]:
        """Budget, use and every loaded model's share, for the memory endpoint."""
        models = self.loaded()
        active, cached, resident = self._snapshot(models)
        committed = self.committed_bytes()
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": self._used(models, active, cached),
            "committed_bytes": committed,
            "free_bytes": self.budget_bytes - committed,
            "kv_claimed_bytes": self.budget.claimed_bytes,
            "kv_claimed_peak_bytes": self.budget.peak_claimed_bytes,
            "process": {
                "resident_bytes": resident,
                "mlx_active_bytes": active,
                "mlx_cache_bytes": cached,
                "mlx_cache_limit_bytes": self.settings.mlx_cache_limit_bytes,
            },
            "models": [m.describe() for m in models],
            "loading": [
                {"name": n, "reserved_bytes": b} for n, b in self.budget.reservations().items()
            ],
        }

    # -- loading ------------------------------------------------------------------------

    async def get(self, name: str, kind: str) -> LoadedModel:
        """The loaded model of ``kind`` serving ``name``, loading it (again, if its engine
        failed); 400 when ``name`` is a model of another kind."""
        resolved = self.registry.resolve(name)
        if resolved.spec.kind != kind:
            raise InvalidRequestError(
                f"The model {name!r} is a {resolved.spec.kind} model, not a {kind} model",
                param="model",
                code="model_not_supported",
            )
        model = await self.load(resolved.spec)
        model.last_used = time.time()
        return model

    async def load(self, spec: ModelSpec) -> LoadedModel:
        """Load ``spec`` once; callers that arrive during the load wait for the same one."""
        self._loop = asyncio.get_running_loop()
        model = self._loaded.get(spec.name)
        if model is not None and model.state == "failed":
            logger.warning("restarting %s: its engine failed", model.name)
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
        engine_type = self.engines.for_spec(spec)
        engine_class = engine_type.engine_class()
        try:
            # Preparing may convert with MLX: on a pooled thread (mlx_host.runtime.threads).
            prepared = await run_in_pooled_thread(engine_class.prepare, spec, self.settings)
        except ModelFilesMissingError as exc:
            logger.error("cannot prepare %s from %s: %s", spec.name, spec.source, exc.message)
            raise
        except ModelLoadError as exc:  # its message may name server paths: for the log only
            logger.error("cannot prepare %s: %s", spec.name, exc.message)
            raise ModelLoadError(
                f"The model {spec.name!r} could not be loaded (see the server log)"
            ) from exc
        path = prepared.path.resolve()
        shared = next((m for m in self.loaded() if m.engine.prepared.path.resolve() == path), None)
        if shared is None and (pending := self._loading_paths.get(path)) is not None:
            shared = await asyncio.shield(pending)  # another name's load of the same weights
        if shared is not None:
            logger.info("%s shares the loaded %s (same weights)", spec.name, shared.name)
            shared.specs.append(spec)
            self._loaded[spec.name] = shared
            return shared
        this_load = asyncio.current_task()
        assert this_load is not None  # load() runs _load as a task
        self._loading_paths[path] = this_load
        try:
            return await self._start(spec, engine_type.name, engine_class, prepared)
        finally:
            del self._loading_paths[path]

    async def _start(
        self, spec: ModelSpec, engine_name: str, engine_class: type[Engine], prepared: PreparedModel
    ) -> LoadedModel:
        logger.info(
            "loading %s from %s with %s (%s)",
            spec.name, spec.source, engine_name, prepared.weight_format,
        )  # fmt: skip
        estimate = spec.memory_bytes or engine_class.estimate_bytes(prepared)
        async with self._room:
            await self._make_room(spec.name, estimate)
            if not self.budget.reserve(spec.name, estimate):  # a claim came in meanwhile
                raise self._no_room(spec.name, estimate, [])
        started = time.monotonic()
        try:
            engine = engine_class(spec, prepared, self.settings, self.budget.claim(spec.name))
            await engine.start()
        finally:
            self.budget.release(spec.name)
        self.load_seconds += time.monotonic() - started
        model = LoadedModel([spec], engine, engine_name)
        self._loaded[spec.name] = model
        self.loads += 1
        logger.info("loaded %s (%.2f GiB)", spec.name, model.memory_bytes / GiB)
        return model

    async def _make_room(self, name: str, needed: int, keep: str | None = None) -> None:
        """Evict idle, unpinned models (lowest priority, then least recently used; never
        ``keep``) until ``needed`` bytes fit; 503 with Retry-After when they cannot. What is
        free is measured again after each eviction, not predicted."""
        candidates = sorted(
            (m for m in self.loaded() if not m.pinned and not m.busy and keep not in m.names),
            key=lambda m: (m.priority, m.last_used),
        )
        if self.budget_bytes - self.committed_bytes() + sum(m.memory_bytes for m in candidates) < (
            needed
        ):
            raise self._no_room(name, needed, candidates)
        evicted: list[LoadedModel] = []
        while self.budget_bytes - self.committed_bytes() < needed:
            if not candidates:
                raise self._no_room(name, needed, evicted)
            model = candidates.pop(0)
            logger.info("evicting %s to make room for %s", model.name, name)
            await self._unload(model)
            self.evictions += 1
            evicted.append(model)

    def _no_room(self, name: str, needed: int, leaving: list[LoadedModel]) -> MLXHostError:
        holders = [_describe_holder(m) for m in self.loaded() if m not in leaving]
        return ServiceUnavailableError(
            f"Not enough memory for {name!r}: it needs {needed / GiB:.2f} GiB, the budget is "
            f"{self.budget_bytes / GiB:.2f} GiB, held by "
            f"{', '.join(holders) or 'models still loading'}",
            code="insufficient_memory",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def _relieve(self, needed: int, owner: str) -> bool:
        """A model's running requests cannot claim ``needed`` bytes: evict idle models for them
        if any can go (in the event loop); whether that may help. Called from worker threads."""
        idle = [
            m for m in self.loaded()
            if not m.pinned and not m.busy and owner not in m.names
        ]  # fmt: skip
        if not idle or self._loop is None:
            return False
        if not self._relieving:
            self._relieving = True
            self._loop.call_soon_threadsafe(self._start_relief, needed, owner)
        return True

    def _start_relief(self, needed: int, owner: str) -> None:
        task = asyncio.create_task(self._relief(needed, owner))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relief(self, needed: int, owner: str) -> None:
        try:
            async with self._room:
                await self._make_room(f"requests of {owner}", needed, keep=owner)
        except ServiceUnavailableError:
            logger.info("no idle model can make room for requests of %s", owner)
        finally:
            self._relieving = False

    async def unload(self, name: str) -> LoadedModel:
        """Unload a model now (management): 404 when not loaded, 409 while requests run, 400
        for a name served by a stand-in (which other names share)."""
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
        model.engine.stop_accepting()
        await model.engine.close(wait_seconds)

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
        """Stop every model's engine; one stuck in its work is left behind after
        ``wait_seconds``, so that shutting down never hangs."""
        models = self.loaded()
        await asyncio.gather(*(self._unload(m, wait_seconds) for m in models))
