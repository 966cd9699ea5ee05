"""The process, prepared for MLX before MLX loads: an optimized BLAS and an allocator that
returns freed memory.

MLX-free. The app chooses the BLAS from its settings (``choose_blas``) before any model loads;
importing ``mlx_host.engine`` then calls ``prepare()``, which does the work once. Outside an
app (the CLI's converter, benchmarks) the process settings choose.
"""

from __future__ import annotations

import logging
import os

from mlx_host.runtime import libc
from mlx_host.runtime.blas import REFERENCE_BLAS_WARNING, load_blas

logger = logging.getLogger(__name__)

_chosen: str | None = None
_loaded: str | None = None

# OpenBLAS's idle threads spin before they sleep; on a machine of few cores the spinning takes
# the cores that the next (often small) operation needs. Sleeping at once measured faster on
# the 2-core CI machines: SmolLM2 decoding 19.6 -> 21.2 tokens/s at 1 stream, 118 -> 127 at 16,
# and Whisper's real-time factor 0.082 -> 0.073 (docs/engine.md). Read when OpenBLAS loads;
# an operator's own value wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def choose_blas(choice: str) -> None:
    """Load ``choice`` (auto, none or a path) when MLX first loads."""
    global _chosen
    if _loaded is not None and choice != _chosen:
        logger.warning(
            "BLAS %r asked for after MLX loaded with %s: restart to use it", choice, _loaded
        )
    _chosen = choice


def prepare() -> str:
    """Tune the allocator and load the chosen BLAS, once; returns the BLAS in use."""
    global _chosen, _loaded
    if _loaded is None:
        if _chosen is None:
            from mlx_host.settings import get_settings

            _chosen = get_settings().blas
        libc.return_large_blocks_on_free()
        _loaded = load_blas(_chosen)
        if _loaded == "reference" and _chosen != "none":
            logger.warning("%s", REFERENCE_BLAS_WARNING)
    return _loaded
