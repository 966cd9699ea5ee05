"""glibc's allocator, tuned so that memory MLX frees goes back to the system.

MLX's CPU backend allocates with malloc. glibc serves blocks under its mmap threshold from heap
arenas and raises that threshold as large blocks are freed, so after a burst of requests the
freed KV caches stay in the process: measured here, RSS stayed ~0.9 GB above what MLX held after
64 concurrent streams. A fixed threshold makes large blocks mmap'd (returned on free), and
``malloc_trim`` hands back what the heap keeps once a model goes idle (RSS within ~40 MB of
MLX's own figure). Elsewhere (macOS, musl) both are no-ops. This module must not import mlx.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 20


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc has both; musl lacks them)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def return_large_blocks_on_free() -> None:
    """Serve blocks of 1 MiB and more with mmap, so freeing them returns them at once."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def trim() -> None:
    """Give the heap's free memory back to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
