"""What the engines that work one request at a time in their own thread share (Whisper,
speech synthesis): their state, and the admission of a request, which waits in a bounded
queue (429 beyond it) and is refused while the engine is not serving (503)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlx_host.errors import RateLimitError, ServiceUnavailableError
from mlx_host.models.engine import Engine, EngineState, PreparedModel

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings


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
