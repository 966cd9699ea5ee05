"""The memory budget: one figure of bytes that model loads and running requests share.

Loads reserve their estimate in the event loop (the model manager); each engine's worker thread
claims, before it starts a request, the memory its running requests may grow to (an LLM: the KV
cache of its batch). Both are checked, under one lock, against the same *committed* figure:
the bytes held now outside the claims (weights, prompt caches, MLX's buffer cache), plus every
claim (which bounds what running requests hold from above), plus the reservations of loads in
progress.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable

#: Asked, from a worker thread, when a claim of ``nbytes`` does not fit: start freeing memory
#: if possible (evicting idle models) and say whether waiting may let the claim fit.
Relieve = Callable[[int, str], bool]


class MemoryBudget:
    """``total_bytes`` for everything models hold; ``held`` measures what claims and
    reservations do not cover."""

    def __init__(self, total_bytes: int, held: Callable[[], int]) -> None:
        self.total_bytes = total_bytes
        self.relieve: Relieve | None = None  # set by the manager
        self._held = held
        self._claimed = 0
        self._reserved: dict[str, int] = {}
        self.peak_claimed_bytes = 0  # the most ever claimed at once
        self._lock = threading.Lock()

    @property
    def claimed_bytes(self) -> int:
        """Bytes claimed for what running requests may grow to."""
        return self._claimed

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved for loads in progress."""
        return sum(list(self._reserved.values()))

    def reservations(self) -> dict[str, int]:
        """Loads in progress and the bytes reserved for each."""
        return dict(self._reserved)

    def committed_bytes(self) -> int:
        """Bytes held outside the claims, plus the claims and the reservations."""
        return self._held() + self._claimed + self.reserved_bytes

    def _fits(self, extra: int) -> bool:
        return self.committed_bytes() + extra <= self.total_bytes

    def reserve(self, name: str, nbytes: int) -> bool:
        """Reserve ``nbytes`` for loading ``name``; False (nothing reserved) if they do not
        fit beside what is committed."""
        with self._lock:
            if not self._fits(nbytes):
                return False
            self._reserved[name] = nbytes
            return True

    def release(self, name: str) -> None:
        """End the reservation for ``name`` (its load finished or failed)."""
        with self._lock:
            self._reserved.pop(name, None)

    def claim(self, owner: str) -> KVClaim:
        """A new, empty claim for the running requests of the model ``owner``."""
        return KVClaim(self, owner)

    def _resize(self, claim: KVClaim, nbytes: int) -> bool:
        with self._lock:
            grow = nbytes - claim.nbytes
            if grow > 0 and not self._fits(grow):
                return False
            self._claimed += grow
            self.peak_claimed_bytes = max(self.peak_claimed_bytes, self._claimed)
            claim.nbytes = nbytes
            return True


class KVClaim:
    """One model's share of the budget: what its running requests may grow to.

    Thread-safe: the engine's worker thread resizes it as requests start and finish.
    """

    def __init__(self, budget: MemoryBudget, owner: str) -> None:
        self.nbytes = 0
        self.owner = owner
        self._budget = budget

    def resize(self, nbytes: int) -> bool:
        """Claim ``nbytes`` in all; False (and nothing changes) when growing would overrun."""
        return self._budget._resize(self, nbytes)

    def release(self) -> None:
        """Give the whole claim back."""
        self._budget._resize(self, 0)

    def worth_waiting(self, nbytes: int) -> bool:
        """Whether a claim of ``nbytes`` that does not fit now may fit later: other models'
        running requests or loads in progress will give memory back, or idle models can be
        evicted (which this starts)."""
        budget = self._budget
        if budget.claimed_bytes > self.nbytes or budget.reserved_bytes:
            return True
        return budget.relieve is not None and budget.relieve(nbytes, self.owner)


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class _TaskVMInfo(ctypes.Structure):
    # mach/task_info.h, struct task_vm_info, up to phys_footprint (revision 1).
    _fields_ = [
        ("virtual_size", ctypes.c_uint64),
        ("region_count", ctypes.c_int32),
        ("page_size", ctypes.c_int32),
        *((name, ctypes.c_uint64) for name in (
            "resident_size", "resident_size_peak", "device", "device_peak", "internal",
            "internal_peak", "external", "external_peak", "reusable", "reusable_peak",
            "purgeable_volatile_pmap", "purgeable_volatile_resident",
            "purgeable_volatile_virtual", "compressed", "compressed_peak",
            "compressed_lifetime", "phys_footprint",
        )),
    ]  # fmt: skip


def _darwin_footprint() -> int | None:
    """macOS's physical footprint of this process (what Activity Monitor shows as Memory;
    it includes Metal buffers, which RSS does not)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    info = _TaskVMInfo()
    count = ctypes.c_uint32(ctypes.sizeof(info) // 4)
    task_vm_info = 22
    libc.mach_task_self.restype = ctypes.c_uint32
    status = libc.task_info(
        libc.mach_task_self(), task_vm_info, ctypes.byref(info), ctypes.byref(count)
    )
    return int(info.phys_footprint) if status == 0 else None


def process_memory() -> int | None:
    """What the system counts as this process's memory: RSS on Linux, the physical footprint
    on macOS; None elsewhere."""
    if sys.platform.startswith("linux"):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if sys.platform == "darwin":
        try:
            return _darwin_footprint()
        except (OSError, AttributeError):
            return None
    return None
