"""The engine of ``stt`` models: Whisper on MLX (mlx-whisper's model code), one worker thread
per model that loads it and transcribes one file at a time, the others waiting in a bounded
queue.

Sources: an MLX Whisper directory (``config.json`` and ``weights.safetensors`` or
``weights.npz``) as it is, or a CTranslate2 Whisper directory converted once into the cache
(``ct2``), in the weight format that is fast on this device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_whisper.tokenizer import LANGUAGES
from mlx_whisper.whisper import ModelDimensions, Whisper

from mlx_host.audio import PCMStream, decode
from mlx_host.engine import memory
from mlx_host.engine.ct2 import is_ct2_whisper
from mlx_host.engine.device import preferred_weight_format
from mlx_host.engine.transcribe import Cancelled, WindowedTranscription
from mlx_host.engine.worker import STOP, ThreadWorkerEngine
from mlx_host.errors import (
    GenerationError,
    MLXHostError,
    ModelLoadError,
    ServiceUnavailableError,
)
from mlx_host.models.engine import PreparedModel
from mlx_host.models.sources import convert_into_cache, directory_digest, locate
from mlx_host.transcription import TranscriptionOptions, TranscriptPiece

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)


def _is_mlx_whisper(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = (path / "weights.safetensors").exists() or (path / "weights.npz").exists()
    return weights and "n_mels" in config


def load_whisper(path: Path) -> Whisper:
    """An MLX Whisper model from a directory written by mlx-whisper's converter or ours."""
    config = json.loads((path / "config.json").read_text())
    config.pop("model_type", None)
    heads = config.pop("alignment_heads", None)
    quantization = config.pop("quantization", None)
    weights_file = path / "weights.safetensors"
    if not weights_file.exists():
        weights_file = path / "weights.npz"
    weights = cast(dict[str, mx.array], mx.load(str(weights_file)))
    first = next(iter(weights.values()))
    dtype = mx.float32 if first.dtype == mx.float32 else mx.float16
    model = Whisper(ModelDimensions(**config), dtype)
    if quantization is not None:
        nn.quantize(
            model,
            **quantization,
            class_predicate=lambda p, m: (
                isinstance(m, nn.Linear | nn.Embedding) and f"{p}.scales" in weights
            ),
        )
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    if heads:
        model.set_alignment_heads(np.array(heads))
    return model


@dataclass(eq=False)
class _Job:
    audio: BinaryIO
    options: TranscriptionOptions
    emit: Callable[[TranscriptPiece | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class WhisperEngine(ThreadWorkerEngine):
    """Transcribes for every service, one file at a time per model, in its own thread."""

    kind = "stt"
    uses_mlx = True
    request_noun = "transcription"

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """An MLX Whisper directory: as it is, or converted (and cached) from CTranslate2."""
        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        path = locate(spec.source)
        if _is_mlx_whisper(path):
            return PreparedModel(path, "as stored")
        if not is_ct2_whisper(path):
            raise ModelLoadError(
                f"{spec.source!r} is neither an MLX Whisper directory nor a CTranslate2 one"
            )
        fmt = preferred_weight_format(spec.weight_format or settings.weight_format)
        target = settings.cache_dir / "models" / f"{directory_digest(path)[:24]}-whisper-{fmt}"
        if not (target / "config.json").exists():
            convert_into_cache(path, target, fmt)
        return PreparedModel(target, fmt)

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """Converted from CTranslate2 into the device's format, else as stored."""
        try:
            path = locate(spec.source or "")
        except ModelLoadError:
            return "unavailable"
        if _is_mlx_whisper(path):
            return "as stored"
        return preferred_weight_format(spec.weight_format or settings.weight_format)

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        memory.set_buffer_cache_limit(settings.mlx_cache_limit_bytes)
        self.working_bytes = 0  # what one transcription needs beside the weights
        self.multilingual = False
        self.languages: frozenset[str] = frozenset({"en"})

    def describe(self) -> dict[str, Any]:
        """Weights and the transcriptions running or queued."""
        return {
            "weight_bytes": self.weight_bytes,
            "working_bytes": self.claim.nbytes,
            "running_requests": min(1, self.active_requests),
            "queued_requests": max(0, self.active_requests - 1),
        }

    # -- the Transcriber interface ------------------------------------------------------

    async def transcribe(
        self, audio: BinaryIO, options: TranscriptionOptions
    ) -> AsyncIterator[TranscriptPiece]:
        """Text as it is decoded, then the transcript; leaving early cancels it."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[TranscriptPiece | BaseException] = asyncio.Queue()

        def emit(item: TranscriptPiece | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(pieces.put_nowait, item)

        self.admit()
        job = _Job(audio, options, emit)
        self._inbox.put(job)
        try:
            while True:
                piece = await self._next(pieces)
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
                if piece.result is not None:
                    return
        finally:
            self.active_requests -= 1
            job.cancelled.set()

    async def _next(
        self, pieces: asyncio.Queue[TranscriptPiece | BaseException]
    ) -> TranscriptPiece | BaseException:
        while pieces.empty():
            try:
                return await asyncio.wait_for(pieces.get(), 1.0)
            except TimeoutError:
                if pieces.empty() and (self._state != "ready" or not self._thread.is_alive()):
                    return ServiceUnavailableError(
                        f"The model {self.spec.name!r} stopped working; retry",
                        code="model_failed",
                        headers={"Retry-After": "1"},
                    )
        return pieces.get_nowait()

    # -- worker thread ------------------------------------------------------------------

    def _load(self) -> None:
        self._model = load_whisper(self.prepared.path)
        self.weight_bytes = memory.parameter_bytes(self._model)
        dims = self._model.dims
        # Attention scores and softmax over one window, and the activations beside them.
        self.working_bytes = (
            2 * dims.n_audio_head * dims.n_audio_ctx**2 + 16 * dims.n_audio_ctx * dims.n_audio_state
        ) * 4
        self.multilingual = bool(self._model.is_multilingual)
        if self.multilingual:
            self.languages = frozenset(LANGUAGES)
        self._dtype = (
            mx.float32 if self._model.encoder.conv1.weight.dtype == mx.float32 else (mx.float16)
        )

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not STOP:
            self._work(job)

    def _unload(self) -> None:
        self._model = None
        memory.release_unused()

    def _work(self, job: _Job) -> None:
        if job.cancelled.is_set():
            return
        while not self.claim.resize(self.working_bytes):
            if not self.claim.worth_waiting(self.working_bytes) or job.cancelled.wait(0.05):
                if not job.cancelled.is_set():
                    job.emit(
                        ServiceUnavailableError(
                            f"The model {self.spec.name!r} has no memory to transcribe now",
                            code="insufficient_memory",
                            headers={"Retry-After": "5"},
                        )
                    )
                return
        try:
            pcm = PCMStream(decode(job.audio, self.settings.max_audio_seconds))
            run = WindowedTranscription(
                self._model, pcm, job.options,
                emit=lambda text: job.emit(TranscriptPiece(delta=text)),
                cancelled=job.cancelled.is_set, dtype=self._dtype,
            )  # fmt: skip
            job.emit(TranscriptPiece(result=run.run()))
        except Cancelled:
            pass
        except MLXHostError as exc:  # the audio turned out bad partway through
            job.emit(exc)
        except Exception:
            logger.exception("a transcription failed on %s", self.spec.name)
            job.emit(GenerationError("The model failed while transcribing; retry the request"))
        finally:
            self.claim.resize(0)
            memory.release_unused()
