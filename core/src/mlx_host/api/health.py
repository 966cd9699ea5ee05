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
    installed services and the memory use of the loaded models."""
    from mlx_host.engine import device

    failed = [m.name for m in host.models.loaded() if m.state == "failed"]
    return {
        "status": "degraded" if failed else "ok",
        "failed_models": failed,
        "version": version("mlx-host"),
        **device.describe(),
        "weight_format": host.models.weight_format,
        "services": [
            {
                "name": name,
                "key_prefix": s.spec.key_prefix,
                "default_model": s.spec.default_model,
                "distribution": s.distribution,
            }
            for name, s in host.services.items()
        ],
        "memory": host.models.usage(),
    }
