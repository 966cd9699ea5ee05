"""What the engines whose requests queue for one worker share (Whisper, speech synthesis,
embeddings): their state, and the admission of a request, which waits in a bounded queue (429
beyond it) and is refused while the engine is not serving (503); and, for those whose worker
is a pooled MLX thread fed by an inbox (Whisper, embeddings), the thread's plumbing."""

from __future__ import annotations

import asyncio
import logging
import queue
from abc import abstractmethod
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mlx_host.errors import ModelLoadError, RateLimitError, ServiceUnavailableError
from mlx_host.models.engine import Engine, EngineState, PreparedModel
from mlx_host.runtime.threads import MLXThread

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)


class WorkerEngine(Engine):
    """An engine whose requests queue for one worker: ``admit`` one before its work starts
    (it counts in ``active_requests`` until the caller decrements it)."""

    #: What one request is called in messages ("transcription", ...).
    request_noun = "request"

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        self.capacity = 1 + settings.max_queued_requests
        self.active_requests = 0
        self._state: EngineState = "loading"
        self._accepting = True

    @property
    def busy(self) -> bool:
        """Requests run or wait."""
        return self.active_requests > 0

    @property
    def state(self) -> EngineState:
        """Loading, ready, failed or stopped."""
        return self._state

    def stop_accepting(self) -> None:
        """New requests get 503 from now on."""
        self._accepting = False

    def admit(self) -> None:
        """Count a new request in: 503 while the engine is not serving, 429 when its queue is
        full."""
        if not self._accepting or self._state != "ready":
            raise ServiceUnavailableError(
                f"The model {self.spec.name!r} is not serving now; retry shortly",
                headers={"Retry-After": "1"},
            )
        if self.active_requests >= self.capacity:
            noun = self.request_noun + "s" * (self.active_requests != 1)
            raise RateLimitError(
                f"The model {self.spec.name!r} has {self.active_requests} {noun} running or "
                "queued, its limit; retry shortly",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self.active_requests += 1


#: What ``ThreadWorkerEngine.close`` puts in the inbox to end the worker's loop.
STOP = object()


class ThreadWorkerEngine(WorkerEngine):
    """A ``WorkerEngine`` whose worker is one pooled MLX thread (``mlx_host.runtime.threads``):
    it loads the model (``_load``; a failure is this model's 503, nobody else's), then serves
    jobs from ``_inbox`` until ``STOP`` (``_serve``); however it ends, every job it still has
    is answered 503 and the model is dropped (``_unload``). Its memory is the weights
    (``weight_bytes``, measured at load) and what the work in progress holds under its
    claim. Jobs have an ``emit(item)`` that hands the caller a result or an error."""

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        self.weight_bytes = 0
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loaded: Future[None] = Future()
        self._thread = MLXThread(self._run, name=f"mlx-{spec.name}")

    @abstractmethod
    def _load(self) -> None:
        """Load the model and set ``weight_bytes`` (in the worker thread)."""

    @abstractmethod
    def _serve(self) -> None:
        """Serve jobs from ``_inbox`` until ``STOP`` (in the worker thread)."""

    @abstractmethod
    def _unload(self) -> None:
        """Drop the model and give its memory back (in the worker thread)."""

    def _held_jobs(self) -> list[Any]:
        """Jobs taken from the inbox and not answered yet, when the worker ends."""
        return []

    def _run(self) -> None:
        try:
            self._load()
        except BaseException:  # this model's 503, nobody else's
            logger.exception("loading %s failed", self.spec.name)
            self._state = "failed"
            self._loaded.set_exception(
                ModelLoadError(f"The model {self.spec.name!r} could not be loaded (see the log)")
            )
            return
        self._state = "ready"
        self._loaded.set_result(None)
        try:
            self._serve()
        except BaseException:
            logger.exception("the worker of %s died", self.spec.name)
            self._state = "failed"
        finally:
            if self._state != "failed":
                self._state = "stopped"
            gone = ServiceUnavailableError(f"The model {self.spec.name!r} was unloaded")
            unanswered = self._held_jobs()
            while not self._inbox.empty():
                unanswered.append(self._inbox.get_nowait())
            for job in unanswered:
                if job is not STOP:
                    job.emit(gone)
            self._unload()

    async def start(self) -> None:
        """Load the model in the worker thread."""
        self._thread.start()
        await asyncio.wrap_future(self._loaded)

    @property
    def memory_bytes(self) -> int:
        """The weights, and what the work in progress holds."""
        return self.weight_bytes + self.claim.nbytes

    @property
    def claimed_in_use_bytes(self) -> int:
        """The work in progress's memory, which its claim covers."""
        return self.claim.nbytes

    async def close(self, wait_seconds: float) -> None:
        """Stop the worker after its current work (leaving it behind if it is stuck)."""
        self._accepting = False
        self._inbox.put(STOP)
        await asyncio.to_thread(self._thread.join, wait_seconds)
        if self._thread.is_alive():
            logger.error(
                "the worker of %s did not stop within %.0f s", self.spec.name, wait_seconds
            )
            self._state = "stopped"
