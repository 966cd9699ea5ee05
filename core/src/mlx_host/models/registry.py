"""Names and aliases of every model the server knows, what each resolves to, and which one a
service's request gets."""

from __future__ import annotations

from dataclasses import dataclass

from mlx_host.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from mlx_host.models.spec import ModelSpec
from mlx_host.services import CAPABILITY_KINDS, Capability, ServiceSpec


@dataclass(frozen=True)
class Resolved:
    """A requested name, the model that serves it, and whether that model stands in for it."""

    requested: str
    spec: ModelSpec
    stand_in: bool = False


class ModelRegistry:
    """Model specs by name and alias. Later registrations of a name replace earlier ones, so
    settings (registered last) override plugins, which override the built-ins.

    ``stand_ins`` maps a kind to the model that serves names of that kind which have no
    weights here (a service default such as qwen3-14b on a machine without it).
    """

    def __init__(self, stand_ins: dict[str, str] | None = None) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._stand_ins = stand_ins or {}

    def register(self, spec: ModelSpec) -> None:
        """Add ``spec``, or replace the model already known under its name."""
        existing = self._specs.get(spec.name)
        if existing and spec.source is None:
            return  # a declaration never hides a configured source
        self._specs[spec.name] = spec

    def declare(self, name: str, kind: str) -> None:
        """Make ``name`` known without weights (a service default not configured here)."""
        if self.find(name) is None:
            self._specs[name] = ModelSpec(name=name, kind=kind)

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
        stand-in of its kind is configured."""
        spec = self.find(name)
        if spec is None:
            raise NotFoundError(f"The model {name!r} does not exist", code="model_not_found")
        if spec.source is not None:
            return Resolved(name, spec)
        stand_in_name = self._stand_ins.get(spec.kind)
        stand_in = self.find(stand_in_name) if stand_in_name else None
        if stand_in is None or stand_in.source is None:
            raise ServiceUnavailableError(
                f"The model {name!r} has no source configured on this server (set MLX_HOST_MODELS)"
            )
        return Resolved(name, stand_in, stand_in=True)

    def choose(self, service: ServiceSpec, capability: Capability, requested: str | None) -> str:
        """The model a service's request gets: its default for ``capability`` unless it may
        have the one it asks for. 403 when the service does not offer the capability or may
        not use the model, 404 for a name the server does not know, 400 for a model of
        another kind. Aliases are the same model as their name on either side of the check."""
        default = service.default_model(capability)
        if default is None:
            raise PermissionDeniedError(
                f"The {service.name!r} service does not offer {capability}",
                code="capability_not_offered",
            )
        name = default if requested in (None, "", "default") else requested
        spec = self.find(name)
        if spec is None:
            raise NotFoundError(
                f"The model {name!r} does not exist", param="model", code="model_not_found"
            )
        policy = service.policy
        own = service.default_models.values()
        permitted = {self.canonical(n) for n in (*own, *policy.allowed_models)}
        if "*" not in policy.allowed_models and spec.name not in permitted:
            raise PermissionDeniedError(
                f"The {service.name!r} service may not use the model {name!r}",
                param="model",
                code="model_not_allowed",
            )
        kind = CAPABILITY_KINDS[capability]
        if spec.kind != kind:
            raise InvalidRequestError(
                f"The model {name!r} is a {spec.kind} model; {capability} needs a {kind} model",
                param="model",
                code="model_not_supported",
            )
        return spec.name
