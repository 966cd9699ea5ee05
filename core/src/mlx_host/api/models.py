"""``/models``: what a key may use (OpenAI's list shape, with memory details), and management.

Service keys see their service's models; the admin key sees every registered model and may
load and unload them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from mlx_host.api.deps import HostDep, Reader, require_admin
from mlx_host.api.errors import error_responses
from mlx_host.errors import ModelLoadError, NotFoundError, ServiceUnavailableError
from mlx_host.models.manager import ModelManager
from mlx_host.plugins import InstalledService

router = APIRouter(tags=["models"], responses=error_responses(400, 401, 403, 404, 409, 503))
Admin = [Depends(require_admin)]


def visible_models(manager: ModelManager, reader: InstalledService | None) -> list[str]:
    """Names a reader may see: every model for the admin; for a service its default models
    first (by capability), then what its policy allows."""
    every = [s.name for s in manager.registry.specs()]
    if reader is None:
        return every
    policy = reader.spec.policy
    allowed = every if "*" in policy.allowed_models else list(policy.allowed_models)
    names = [*reader.spec.default_models.values(), *allowed]
    return list(dict.fromkeys(names))  # in order, each once


def describe(manager: ModelManager, name: str) -> dict[str, Any]:
    """One model in OpenAI's shape plus what serves it, with which engine, and what it costs
    in memory."""
    entry: dict[str, Any] = {"id": name, "object": "model", "created": 0}
    try:
        resolved = manager.registry.resolve(name)
    except ServiceUnavailableError:  # declared, but no weights and no stand-in here
        declared = manager.registry.find(name)
        return {
            **entry, "owned_by": "mlx-host", "kind": declared.kind if declared else None,
            "served_by": None, "loaded": False, "state": "unavailable",
        }  # fmt: skip
    spec = resolved.spec
    loaded = manager.get_loaded(spec.name)
    try:
        engine: str | None = manager.engines.for_spec(spec).name
    except ModelLoadError:
        engine = None
    own = manager.registry.find(name) or spec  # a stand-in's aliases are not this name's
    return {
        **entry,
        "owned_by": own.owned_by,
        "kind": spec.kind,
        "engine": engine,
        "aliases": list(own.aliases),
        "served_by": spec.name,
        "stand_in": resolved.stand_in,
        "loaded": loaded is not None,
        "state": loaded.state if loaded else "unloaded",
        "memory_bytes": loaded.memory_bytes if loaded else None,
        "last_used": loaded.last_used if loaded else None,
        "weight_format": (
            loaded.engine.prepared.weight_format if loaded else manager.planned_format(spec)
        ),
        "priority": spec.priority,
        "pinned": spec.pinned,
        "auto_load": spec.auto_load,
        "idle_ttl_seconds": spec.idle_ttl_seconds,
    }


@router.get("/models")
async def list_models(reader: Reader, host: HostDep) -> dict[str, Any]:
    """List the models this key may use, with loaded state and measured memory."""
    manager = host.models
    data = []
    for name in visible_models(manager, reader):
        try:
            data.append(describe(manager, name))
        except NotFoundError:
            continue  # a policy may allow a model this machine does not have
    return {"object": "list", "data": data}


@router.get("/models/memory/usage")
async def memory_usage(_: Reader, host: HostDep) -> dict[str, Any]:
    """The memory budget, what is used and free, and each loaded model's measured share."""
    return host.models.usage()


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, reader: Reader, host: HostDep) -> dict[str, Any]:
    """Describe one model this key may use, by name or alias (404 otherwise)."""
    registry = host.models.registry
    visible = {registry.canonical(n) for n in visible_models(host.models, reader)}
    if registry.canonical(model_id) not in visible:
        raise NotFoundError(f"The model {model_id!r} does not exist", code="model_not_found")
    return describe(host.models, model_id)


@router.post("/models/{model_id}/load", dependencies=Admin)
async def load_model(model_id: str, host: HostDep) -> dict[str, Any]:
    """Load a model now (admin), evicting idle ones if the budget requires it."""
    await host.models.load(host.models.registry.resolve(model_id).spec)
    return describe(host.models, model_id)


@router.post("/models/{model_id}/unload", dependencies=Admin)
async def unload_model(model_id: str, host: HostDep) -> dict[str, Any]:
    """Unload a model now (admin); 409 while it has requests in flight."""
    await host.models.unload(model_id)
    return describe(host.models, model_id)
