"""Names and aliases of every model the server knows, and what each resolves to."""

from __future__ import annotations

from dataclasses import dataclass

from mlx_host.errors import NotFoundError, ServiceUnavailableError
from mlx_host.models.spec import ModelSpec


@dataclass(frozen=True)
class Resolved:
    """A requested name, the model that serves it, and whether that model stands in for it."""

    requested: str
    spec: ModelSpec
    stand_in: bool = False


class ModelRegistry:
    """Model specs by name and alias. Later registrations of a name replace earlier ones, so
    settings (registered last) override plugins, which override the built-ins."""

    def __init__(self, stand_in: str = "") -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._stand_in = stand_in

    def register(self, spec: ModelSpec) -> None:
        """Add ``spec``, or replace the model already known under its name."""
        existing = self._specs.get(spec.name)
        if existing and spec.source is None:
            return  # a declaration never hides a configured source
        self._specs[spec.name] = spec

    def declare(self, name: str) -> None:
        """Make ``name`` known without weights (a service default not configured here)."""
        if self.find(name) is None:
            self._specs[name] = ModelSpec(name=name)

    def specs(self) -> list[ModelSpec]:
        """Every registered model, in registration order."""
        return list(self._specs.values())

    def find(self, name: str) -> ModelSpec | None:
        """The spec registered under ``name`` or with it as an alias."""
        if name in self._specs:
            return self._specs[name]
        return next((s for s in self._specs.values() if name in s.aliases), None)

    def canonical(self, name: str) -> str:
        """The registered name of ``name`` (itself when it is a name, or unknown)."""
        spec = self.find(name)
        return spec.name if spec else name

    def resolve(self, name: str) -> Resolved:
        """The model serving ``name``: 404 when unknown, 503 when it has no weights here and no
        stand-in is configured."""
        spec = self.find(name)
        if spec is None:
            raise NotFoundError(f"The model {name!r} does not exist", code="model_not_found")
        if spec.source is not None:
            return Resolved(name, spec)
        stand_in = self.find(self._stand_in) if self._stand_in else None
        if stand_in is None or stand_in.source is None:
            raise ServiceUnavailableError(
                f"The model {name!r} has no source configured on this server (set MLX_HOST_MODELS)"
            )
        return Resolved(name, stand_in, stand_in=True)
