"""The memory budget: one figure of bytes that model loads and running requests share.

Loads are checked in the event loop by the model manager. Each LLM's worker thread claims, before
it starts a request, the KV cache its batch may grow to with that request. Both check the same
*committed* figure: the bytes held now outside the KV caches of running requests (weights,
prompt caches, MLX's buffer cache, loads in progress) plus every claim, which bounds those KV
caches from above.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable


class MemoryBudget:
    """``total_bytes`` for everything models hold; ``held`` measures what claims do not cover."""

    def __init__(self, total_bytes: int, held: Callable[[], int]) -> None:
        self.total_bytes = total_bytes
        self._held = held
        self._claimed = 0
        self.peak_claimed_bytes = 0  # the most ever claimed at once
        self._lock = threading.Lock()

    @property
    def claimed_bytes(self) -> int:
        """Bytes claimed for the KV caches of admitted requests."""
        return self._claimed

    def committed_bytes(self) -> int:
        """Bytes held now outside the claims, plus the claims."""
        return self._held() + self._claimed

    def claim(self) -> KVClaim:
        """A new, empty claim for one engine's running requests."""
        return KVClaim(self)

    def _resize(self, claim: KVClaim, nbytes: int) -> bool:
        with self._lock:
            grow = nbytes - claim.nbytes
            if grow > 0 and self._held() + self._claimed + grow > self.total_bytes:
                return False
            self._claimed += grow
            self.peak_claimed_bytes = max(self.peak_claimed_bytes, self._claimed)
            claim.nbytes = nbytes
            return True


class KVClaim:
    """One engine's share of the budget: the KV cache its running requests may grow to.

    Thread-safe: the engine's worker thread resizes it as requests start and finish.
    """

    def __init__(self, budget: MemoryBudget) -> None:
        self.nbytes = 0
        self._budget = budget

    def resize(self, nbytes: int) -> bool:
        """Claim ``nbytes`` in all; False (and nothing changes) when growing would overrun."""
        return self._budget._resize(self, nbytes)

    def release(self) -> None:
        """Give the whole claim back."""
        self._budget._resize(self, 0)

    def others_claimed(self) -> bool:
        """Whether other engines hold claims (memory that their running requests give back)."""
        return self._budget.claimed_bytes > self.nbytes


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def process_rss() -> int | None:
    """This process's resident memory in bytes, where the system says (Linux); else None."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
