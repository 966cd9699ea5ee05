"""What MLX runs on here, and which weight format is fast on it."""

from __future__ import annotations

from importlib.metadata import version

import mlx.core as mx

from mlx_host.engine import BLAS
from mlx_host.engine.gguf import WeightFormat


def device_name() -> str:
    """``gpu`` (Metal or CUDA) or ``cpu``: the device MLX computes on by default."""
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def preferred_weight_format(setting: str) -> WeightFormat:
    """Resolve ``auto``: quantized matmuls are the fast path on a GPU and the slow one on the
    CPU backend, where float32 goes through the optimized BLAS (docs/engine.md)."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    return "quantized" if device_name() == "gpu" else "float32"


def describe() -> dict[str, str]:
    """Facts for the health report."""
    return {"device": device_name(), "blas": BLAS, "mlx": version("mlx")}
