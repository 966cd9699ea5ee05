"""Threads for MLX work, kept for the life of the process.

MLX's Python binding leaves thread-local state whose destructor takes the GIL. When a thread
that used MLX ends while the interpreter is finalizing, Python 3.11 ends that thread inside the
destructor, and the process aborts ("terminate called without an active exception", exit
status 134): some of the time, after any model ran in a thread that then ended (measured with
MLX 0.32.4 on Linux; a thread still alive at exit never did, docs/engine.md). So work that uses
MLX borrows a thread from this pool, which parks it afterwards and lends it out again: the pool
holds as many threads as such work ever ran at once, and none of them ends.

MLX-free: it only runs callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

_idle: list[_Runner] = []
_lock = threading.Lock()


class MLXThread:
    """Runs ``target`` once on a pooled thread; a ``threading.Thread`` in what the engines
    use of it (``start``, ``is_alive``, ``join``), where "alive" means running ``target``."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.name = name
        self._target = target
        self._started = False
        self._done = threading.Event()
        self._runner: _Runner | None = None

    def start(self) -> None:
        """Run ``target`` on an idle pooled thread, or a new one."""
        self._started = True
        with _lock:
            runner = _idle.pop() if _idle else None
        if runner is None:
            runner = _Runner()
            runner.start()
        self._runner = runner
        runner.jobs.put(self)

    def is_alive(self) -> bool:
        """Whether ``target`` has started and not yet returned."""
        return self._started and not self._done.is_set()

    @property
    def ident(self) -> int | None:
        """The identifier of the thread running ``target`` (None when it is not running)."""
        return self._runner.ident if self._runner is not None and self.is_alive() else None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for ``target`` to return."""
        self._done.wait(timeout)

    def _run(self) -> None:
        try:
            self._target()
        except BaseException:  # the target's own handlers failed: log, keep the thread
            logger.exception("the work of %s failed", self.name)


class _Runner(threading.Thread):
    """A daemon thread that runs one ``MLXThread`` after another, parked in between."""

    def __init__(self) -> None:
        super().__init__(name="mlx-idle", daemon=True)
        self.jobs: queue.SimpleQueue[MLXThread] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            self.name = job.name
            job._run()
            self.name = "mlx-idle"
            with _lock:
                _idle.append(self)
            # Parked before the job says it is done, so that work started after a join
            # finds this thread idle.
            job._done.set()


async def run_in_pooled_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a pooled thread (as ``asyncio.to_thread`` does on a thread of its own)
    for work that may use MLX, such as converting a model."""
    result: Future[T] = Future()

    def call() -> None:
        if not result.set_running_or_notify_cancel():
            return
        try:
            result.set_result(fn(*args))
        except BaseException as exc:
            with contextlib.suppress(Exception):
                result.set_exception(exc)

    MLXThread(call, name=f"mlx-{getattr(fn, '__qualname__', 'work')}").start()
    return await asyncio.wrap_future(result)
