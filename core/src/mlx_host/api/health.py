"""``GET /health``: liveness and what this server runs on (no key needed)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from fastapi import APIRouter

from mlx_host.api.deps import HostDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(host: HostDep) -> dict[str, Any]:
    """Server status, the MLX device, the BLAS in use, the weight format chosen for converted
    models, the installed services and the memory use of the loaded models."""
    from mlx_host.engine import device

    return {
        "status": "ok",
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
