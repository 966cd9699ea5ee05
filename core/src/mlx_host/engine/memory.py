"""What MLX holds in memory, and releasing what it keeps but no longer uses."""

from __future__ import annotations

from typing import cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_host.runtime import libc


def set_buffer_cache_limit(nbytes: int) -> None:
    """Bound MLX's cache of freed buffers (by default it may grow to the memory limit)."""
    mx.set_cache_limit(nbytes)


def held() -> tuple[int, int]:
    """Bytes of live MLX arrays, and bytes of freed buffers MLX keeps cached for reuse."""
    return mx.get_active_memory(), mx.get_cache_memory()


def release_unused() -> None:
    """Empty MLX's buffer cache and give freed heap memory back to the system."""
    mx.clear_cache()
    libc.trim()


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of a loaded model's parameters (its weights in memory)."""
    weights = cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
    return sum(v.nbytes for _, v in weights)
