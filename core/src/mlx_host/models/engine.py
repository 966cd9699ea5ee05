"""Engines: what runs a loaded model of one kind, and the types plugins register them as.

The memory manager drives every model through this interface, whatever its kind: it prepares
the source, starts the engine, reads its measured memory, and stops it. The core's own engines
(mlx-lm for ``llm`` models today) register through ``mlx_host_register_engines`` as a plugin's
would. This module is free of MLX: an engine type names its class by import path, imported
only when one of its models loads, and one whose dependencies are missing is listed as
unavailable with the hint to install them.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mlx_host.errors import ModelLoadError

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

EngineState = Literal["loading", "ready", "failed", "stopped"]


@dataclass(frozen=True)
class PreparedModel:
    """A model's source made ready to load: a local path and how its weights are stored."""

    path: Path
    weight_format: str = "as stored"


class Engine(ABC):
    """One loaded model, run by the core. Subclasses set ``kind`` and implement the abstract
    members; a kind's own methods (text generation for ``llm``) come on top.

    The manager calls, in order: ``prepare`` (class method, in a worker thread), the
    constructor, ``start``; then reads ``memory_bytes``, ``busy`` and ``state`` while it is
    loaded; and finally ``stop_accepting`` and ``close``.
    """

    #: The kind of model this engine runs: ``llm``, ``stt``, ``tts``, ``embedding`` or a
    #: plugin's own.
    kind: ClassVar[str]
    #: Whether its memory is MLX's (and so already part of MLX's own, process-wide figures);
    #: the core's MLX engines set it.
    uses_mlx: ClassVar[bool] = False

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        self.spec = spec
        self.prepared = prepared
        self.settings = settings
        self.claim = claim

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """Make ``spec.source`` a local path to load (converting it if the engine needs to).
        Runs in a worker thread; raise ``ModelLoadError`` when the source is unusable. The
        default takes the source as a local path."""
        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        path = Path(spec.source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model source {spec.source!r} does not exist")
        return PreparedModel(path)

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """How the model's weights will be held once loaded, for listings (no loading)."""
        return "as stored"

    @classmethod
    def estimate_bytes(cls, prepared: PreparedModel) -> int:
        """Memory the model will need, before it loads (the spec's ``memory_bytes`` wins):
        by default the size of its weight files."""
        path = prepared.path
        files = path.glob("*.safetensors") if path.is_dir() else [path]
        return sum(f.stat().st_size for f in files)

    @abstractmethod
    async def start(self) -> None:
        """Load the model; raise ``ModelLoadError`` (a 503 for this model only) on failure."""

    @property
    @abstractmethod
    def memory_bytes(self) -> int:
        """Measured bytes held for this model now."""

    @property
    def claimed_in_use_bytes(self) -> int:
        """The part of ``memory_bytes`` its claim already covers (the KV caches of running
        requests); the budget counts those once, through the claim."""
        return 0

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Whether requests are in flight (a busy model is never evicted)."""

    @property
    def state(self) -> EngineState:
        """``ready``; ``failed`` when it cannot serve (its next request restarts it)."""
        return "ready"

    def stop_accepting(self) -> None:  # noqa: B027 (engines that queue work override it)
        """Refuse new requests from now on; called before ``close``."""

    @abstractmethod
    async def close(self, wait_seconds: float) -> None:
        """Stop and free the model, answering what it still has; return within about
        ``wait_seconds`` even if its work is stuck."""

    def describe(self) -> dict[str, Any]:
        """Engine-specific figures for the memory report (requests, caches, ...)."""
        return {}


@dataclass(frozen=True)
class EngineType:
    """An engine a plugin (or the core) offers for models of ``kind``.

    ``engine`` is the ``Engine`` subclass or its import path (``"package.module:Class"``),
    imported when a model of this type first loads. ``requires`` names the modules it needs;
    when one is missing, its models answer 503 with ``install_hint``.
    """

    name: str
    kind: str
    engine: str | type[Engine]
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    description: str = ""

    def missing(self) -> list[str]:
        """The required modules that cannot be imported here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def engine_class(self) -> type[Engine]:
        """The engine class, imported on first use; 503 naming what to install if it
        cannot be."""
        if missing := self.missing():
            raise ModelLoadError(
                f"The {self.name!r} engine needs {', '.join(missing)}: {self.install_hint}"
            )
        if not isinstance(self.engine, str):
            return self.engine
        module, _, name = self.engine.partition(":")
        return getattr(importlib.import_module(module), name)


class EngineRegistry:
    """The engine types plugins registered, and which one runs a given model.

    A spec may name its engine; otherwise its kind's engine from settings (``engines``), else
    the first registered for its kind (the core's own come first).
    """

    def __init__(self, types: list[EngineType], defaults: dict[str, str] | None = None) -> None:
        self._types = {t.name: t for t in types}
        self._defaults = defaults or {}

    def types(self) -> list[EngineType]:
        """Every registered engine type."""
        return list(self._types.values())

    def for_spec(self, spec: ModelSpec) -> EngineType:
        """The engine type that runs ``spec``; 503 when none is installed for it."""
        name = spec.engine or self._defaults.get(spec.kind)
        if name is None:
            name = next((t.name for t in self._types.values() if t.kind == spec.kind), None)
        engine = self._types.get(name) if name else None
        if engine is None:
            raise ModelLoadError(
                f"No engine {'named ' + repr(name) if name else 'for ' + spec.kind + ' models'} "
                f"is installed to run {spec.name!r}"
            )
        if engine.kind != spec.kind:
            raise ModelLoadError(
                f"The {engine.name!r} engine runs {engine.kind} models, not {spec.name!r} "
                f"({spec.kind})"
            )
        return engine
