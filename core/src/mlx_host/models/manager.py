"""Loads models on first use and keeps them serving.

Concurrent first requests for one model share a single load. A model that fails to load fails
only the requests for it. (Budgets and eviction come with the memory manager.)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_host.errors import InvalidRequestError
from mlx_host.models.registry import ModelRegistry, Resolved
from mlx_host.models.sources import prepare
from mlx_host.models.spec import ModelSpec

if TYPE_CHECKING:
    from mlx_host.engine.scheduler import BatchScheduler


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


class ModelManager:
    """The loaded models of one server process."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        cache_dir: Path,
        weight_format: str,
        max_batch_size: int,
    ) -> None:
        self.registry = registry
        self._cache_dir = cache_dir
        self._weight_format_setting = weight_format
        self._max_batch_size = max_batch_size
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}

    @property
    def weight_format(self) -> str:
        """The format converted models are stored in on this device."""
        from mlx_host.engine.device import preferred_weight_format

        return preferred_weight_format(self._weight_format_setting)

    def loaded(self) -> list[LoadedModel]:
        """Models currently in memory."""
        return list(self._loaded.values())

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

        assert spec.source is not None
        fmt = self.weight_format
        path = await asyncio.to_thread(prepare, spec.source, self._cache_dir, fmt)
        scheduler = BatchScheduler(path, max_batch_size=self._max_batch_size, name=spec.name)
        tokenizer = await asyncio.wrap_future(scheduler.start())
        stored = fmt if path.is_relative_to(self._cache_dir) else "as stored"
        config = json.loads((path / "config.json").read_text())
        model = LoadedModel(
            spec, path, stored, scheduler, tokenizer, config.get("max_position_embeddings")
        )
        self._loaded[spec.name] = model
        return model

    async def close(self) -> None:
        """Stop every model's worker."""
        for model in self._loaded.values():
            await asyncio.to_thread(model.scheduler.close)
        self._loaded.clear()
