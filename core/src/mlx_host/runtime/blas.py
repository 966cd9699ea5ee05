"""Load an optimized BLAS into the process before MLX, so MLX's CPU backend uses it.

The Linux ``mlx[cpu]`` wheel links a bundled reference BLAS; a library with the standard cblas
symbols loaded first with ``RTLD_GLOBAL`` takes its place. On the 2-core CI machines this makes
float32 decoding 2-18x faster (docs/engine.md). This module must not import mlx.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Known libraries with plain cblas symbols, best first (Debian's libopenblas0-pthread).
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
)


#: What a Linux server without an optimized BLAS is told, once at start and in the log.
REFERENCE_BLAS_WARNING = (
    "no optimized BLAS found: MLX's CPU backend uses its bundled reference BLAS, measured "
    "about 3x slower at one stream and 10x at 32 on 2 cores. Install Debian's OpenBLAS "
    "(apt-get install libopenblas0-pthread) and restart, or set MLX_HOST_BLAS to the path of "
    "a libopenblas.so"
)


def find_blas(choice: str) -> str | None:
    """The library ``choice`` (auto or a path) would load, without loading it (None: MLX
    would keep its reference BLAS; macOS always has Accelerate)."""
    if sys.platform == "darwin":
        return "accelerate"
    if choice == "none":
        return None
    paths = CANDIDATES if choice == "auto" else (choice,)
    return next((p for p in paths if Path(p).exists()), None)


def reference_blas_warning(choice: str) -> str | None:
    """The warning for a server that will run on the reference BLAS though it was not asked
    to (``MLX_HOST_BLAS=none`` is a choice, not a mistake); None otherwise."""
    if choice == "none" or find_blas(choice) is not None:
        return None
    return REFERENCE_BLAS_WARNING


def load_blas(choice: str) -> str:
    """Load the BLAS named by ``choice`` (auto, none or a path) and say what is in use.

    Returns a short description for health reports: the loaded path, ``accelerate`` on macOS
    (MLX uses it itself) or ``reference`` when MLX keeps its bundled BLAS.
    """
    if sys.platform == "darwin":
        return "accelerate"
    if choice == "none":
        return "reference"
    paths = CANDIDATES if choice == "auto" else (choice,)
    for path in paths:
        if not Path(path).exists():
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            logger.warning("could not load BLAS %s: %s", path, exc)
            continue
        return path
    if choice != "auto":
        logger.warning("BLAS %s not found; MLX keeps its reference BLAS", choice)
    return "reference"
