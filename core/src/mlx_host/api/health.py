"""``GET /health``: liveness and what this server runs on (no key needed)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from fastapi import APIRouter

from mlx_host.api.deps import HostDep
from mlx_host.api.errors import error_responses

router = APIRouter(tags=["health"], responses=error_responses())


@router.get("/health")
async def health(host: HostDep) -> dict[str, Any]:
    """Server status (``degraded`` while a loaded model has failed: its next request restarts
    it), the MLX device, the BLAS in use, the weight format chosen for converted models, the
    installed services, the engines (and what an unavailable one needs) and the memory use of
    the loaded models."""
    from mlx_host.engine import device

    failed = [m.name for m in host.models.loaded() if m.state == "failed"]
    return {
        "status": "degraded" if failed else "ok",
        "failed_models": failed,
        "version": version("mlx-host"),
        **device.describe(),
        "weight_format": device.preferred_weight_format(host.settings.weight_format),
        "services": [
            {
                "name": name,
                "key_prefix": s.spec.key_prefix,
                "default_models": s.spec.default_models,
                "distribution": s.distribution,
            }
            for name, s in host.services.items()
        ],
        "engines": [
            {
                "name": e.name,
                "kind": e.kind,
                "available": not (missing := e.missing()),
                "missing": missing,
                "install_hint": e.install_hint if missing else None,
            }
            for e in host.models.engines.types()
        ],
        "memory": host.models.usage(),
    }
