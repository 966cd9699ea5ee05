"""``GET /models``: the models the caller's service may use, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlx_host.api.deps import Caller, HostDep
from mlx_host.errors import NotFoundError, ServiceUnavailableError
from mlx_host.models.registry import ModelRegistry
from mlx_host.services import ServiceSpec

router = APIRouter(tags=["models"])


def visible_models(registry: ModelRegistry, service: ServiceSpec) -> list[str]:
    """Names the service may ask for: its default first, then what its policy allows."""
    allowed = service.policy.allowed_models
    names = [s.name for s in registry.specs()] if "*" in allowed else list(allowed)
    return [service.default_model, *(n for n in names if n != service.default_model)]


def _describe(registry: ModelRegistry, name: str, loaded: set[str]) -> dict[str, Any]:
    try:
        resolved = registry.resolve(name)
    except ServiceUnavailableError:  # declared, but no weights and no stand-in here
        return {"id": name, "object": "model", "created": 0, "owned_by": "mlx-host",
                "served_by": None, "stand_in": False, "loaded": False}  # fmt: skip
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": resolved.spec.owned_by,
        "kind": resolved.spec.kind,
        "served_by": resolved.spec.name,
        "stand_in": resolved.stand_in,
        "loaded": resolved.spec.name in loaded,
    }


@router.get("/models")
async def list_models(caller: Caller, host: HostDep) -> dict[str, Any]:
    """List the models this key's service may use. ``served_by`` names the model that
    actually answers (a stand-in where the machine lacks the service's default)."""
    registry = host.models.registry
    loaded = {m.spec.name for m in host.models.loaded()}
    data = []
    for name in visible_models(registry, caller.spec):
        try:
            data.append(_describe(registry, name, loaded))
        except NotFoundError:
            continue  # a policy may allow a model this machine does not have
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, caller: Caller, host: HostDep) -> dict[str, Any]:
    """Describe one model the caller's service may use (404 otherwise)."""
    if model_id not in visible_models(host.models.registry, caller.spec):
        raise NotFoundError(f"The model {model_id!r} does not exist", code="model_not_found")
    loaded = {m.spec.name for m in host.models.loaded()}
    return _describe(host.models.registry, model_id, loaded)
