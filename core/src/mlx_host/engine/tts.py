"""What every engine of ``tts`` models shares: one worker thread per model synthesizes a
sentence at a time. Concurrent requests take turns sentence by sentence, so a long text never
holds up the first audio of a short one, and an engine's model is only ever used by one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from mlx_host.engine.worker import WorkerEngine
from mlx_host.errors import (
    GenerationError,
    MLXHostError,
    ModelLoadError,
    ServiceUnavailableError,
)
from mlx_host.models.engine import PreparedModel
from mlx_host.runtime.threads import MLXExecutor
from mlx_host.speech import Samples, SpeechOptions, Voice

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)


class SpeechEngine(WorkerEngine):
    """The base of the core's ``tts`` engines (the ``Synthesizer`` interface). Subclasses load
    their model in ``_load`` and speak in ``_sentences``, both called in the worker thread."""

    kind = "tts"
    request_noun = "speech request"
    #: The slowest and fastest ``speed`` the model takes.
    speed_range: tuple[float, float] = (0.5, 2.0)
    #: Whether it uses ``instructions``.
    follows_instructions = False

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        self.sample_rate = 24_000
        self.loaded_bytes = 0
        self._voices: list[Voice] = []
        # A pooled thread: mlx-audio's models use MLX (mlx_host.runtime.threads).
        self._worker = MLXExecutor(f"tts-{spec.name}")

    @abstractmethod
    def _load(self) -> None:
        """Load the model; set ``sample_rate``, ``loaded_bytes`` and the voices."""

    @abstractmethod
    def _unload(self) -> None:
        """Drop the model."""

    @abstractmethod
    def _sentences(self, text: str, options: SpeechOptions) -> Generator[Samples]:
        """Speak ``text``, yielding each sentence's audio as soon as it is synthesized."""

    async def start(self) -> None:
        """Load the model in the worker thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._worker, self._load)
        except ModelLoadError:
            self._state = "failed"
            raise
        except Exception as exc:  # this model's 503, nobody else's
            logger.exception("loading %s failed", self.spec.name)
            self._state = "failed"
            raise ModelLoadError(
                f"The model {self.spec.name!r} could not be loaded (see the log)"
            ) from exc
        self._state = "ready"

    @property
    def memory_bytes(self) -> int:
        """Measured when the model loaded."""
        return self.loaded_bytes

    async def close(self, wait_seconds: float) -> None:
        """Drop the model once the sentence being synthesized is done."""
        self._accepting = False
        unloaded = asyncio.get_running_loop().run_in_executor(self._worker, self._unload)
        try:
            await asyncio.wait_for(asyncio.shield(unloaded), wait_seconds)
        except TimeoutError:
            logger.error("the worker of %s did not stop in %.0f s", self.spec.name, wait_seconds)
        self._state = "stopped"
        self._worker.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        """Voices and the requests being spoken."""
        return {"voices": len(self._voices), "active_requests": self.active_requests}

    # -- the Synthesizer interface ------------------------------------------------------

    def voices(self) -> list[Voice]:
        """The voices installed for this model."""
        return list(self._voices)

    async def synthesize(self, text: str, options: SpeechOptions) -> AsyncIterator[Samples]:
        """Each sentence's audio in turn; leaving early cancels the rest."""
        loop = asyncio.get_running_loop()
        self.admit()
        sentences = self._sentences(text, options)
        try:
            while True:
                try:
                    samples = await loop.run_in_executor(self._worker, next, sentences, None)
                except MLXHostError:
                    raise
                except RuntimeError as exc:
                    if self._state == "stopped":  # the worker shut down under the request
                        raise ServiceUnavailableError(
                            f"The model {self.spec.name!r} was unloaded; retry"
                        ) from exc
                    raise self._failed(exc) from exc
                except Exception as exc:
                    raise self._failed(exc) from exc
                if samples is None:
                    return
                yield samples
        finally:
            self.active_requests -= 1
            with contextlib.suppress(RuntimeError):  # closed in the thread it runs in
                self._worker.submit(sentences.close)

    def _failed(self, exc: BaseException) -> GenerationError:
        logger.error("speech synthesis failed on %s", self.spec.name, exc_info=exc)
        return GenerationError("The model failed while synthesizing speech; retry the request")
