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
import functools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
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
        self._ran = False

    def start(self) -> None:
        """Run ``target`` on an idle pooled thread, or a new one (once, as a thread runs)."""
        if self._started:
            raise RuntimeError(f"{self.name} was already started")
        runner = None
        with _lock:
            while _idle and runner is None:
                candidate = _idle.pop()
                if candidate.is_alive():  # one killed by an injected exception is skipped
                    runner = candidate
        if runner is None:
            runner = _Runner()
            runner.start()
        self._runner = runner
        self._started = True
        runner.job = self  # before the wake-up: the runner finds its job even if it is hit
        runner.wake.put(True)

    def is_alive(self) -> bool:
        """Whether ``target`` has started and not yet returned."""
        return self._started and not self._done.is_set()

    @property
    def ident(self) -> int | None:
        """The identifier of the thread running ``target`` (None when it is not running)."""
        return self._runner.ident if self._runner is not None and self.is_alive() else None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for ``target`` to return."""
        if not self._started:
            raise RuntimeError(f"cannot join {self.name} before it is started")
        self._done.wait(timeout)

    def _run(self) -> None:
        self._ran = True
        try:
            self._target()
        except BaseException:  # the target's own handlers failed: log, keep the thread
            logger.exception("the work of %s failed", self.name)


class _Runner(threading.Thread):
    """A daemon thread that runs one ``MLXThread`` after another, parked in between."""

    def __init__(self) -> None:
        super().__init__(name="mlx-idle", daemon=True)
        self.job: MLXThread | None = None  # set while it is lent
        self.wake: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                self.wake.get()
                assert self.job is not None
                self.name = self.job.name
                self.job._run()
            except BaseException:
                # Raised into this thread from outside (a test kills a model's worker so),
                # outside the job's own handlers: the thread goes on, and a job it was lent
                # but had not started still runs.
                logger.warning("an exception was raised into %s; it goes on", self.name)
                if self.job is not None and not self.job._ran:
                    self.job._run()
            finally:
                job, self.job = self.job, None
                self.name = "mlx-idle"
                with _lock:
                    _idle.append(self)
                # Parked before the job says it is done, so that work started after a join
                # finds this thread idle.
                if job is not None:
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


class MLXExecutor(Executor):
    """A single-worker executor (as ``ThreadPoolExecutor(1)``) whose worker is a pooled
    thread: calls run one at a time, in order, on a thread that never ends."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple] | None] = (
            queue.SimpleQueue()
        )
        self._worker = MLXThread(self._serve, name=name)
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)``; ``RuntimeError`` after ``shutdown``."""
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if not self._worker.is_alive() and not self._worker._started:
                self._worker.start()
            future: Future[T] = Future()
            call = functools.partial(fn, **kwargs) if kwargs else fn
            self._calls.put((future, call, args))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; the worker returns to the pool once the queued ones ran."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            self._calls.put(None)
        if wait and self._worker._started:
            self._worker.join()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
