"""One worker thread per loaded LLM, driving mlx-lm's BatchGenerator as a continuous batch.

MLX streams belong to the thread that made them, and BatchGenerator is not thread-safe, so the
worker thread loads the model, creates the generator and steps it; nothing else touches them.
Requests arrive through a thread-safe inbox; tokens go back to each request's asyncio queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.generate import BatchGenerator
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_host.engine.sampling import make_request_sampler
from mlx_host.engine.stops import StopMatcher
from mlx_host.errors import InvalidRequestError, ModelLoadError, ServiceUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the generator."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; the last one of a request has a ``finish_reason``."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Delta | BaseException], None]
    uid: int | None = None
    completion_tokens: int = 0
    detokenizer: Any = None
    stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(list(self.params.stop))

    def delta(self, text: str, finish_reason: str | None = None) -> Delta:
        return Delta(text, finish_reason, len(self.prompt), self.completion_tokens)


_STOP = object()


class BatchScheduler:
    """Owns one LLM: loads it in its worker thread and serves every request in one batch."""

    def __init__(self, model_path: Path, *, max_batch_size: int = 32, name: str = "llm") -> None:
        self.model_path = model_path
        self.max_batch_size = max_batch_size
        self.name = name
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loaded: Future[TokenizerWrapper] = Future()
        self._thread = threading.Thread(target=self._run, name=f"mlx-{name}", daemon=True)
        self.active_requests = 0
        self.weight_bytes = 0
        self.cache_bytes = 0  # KV caches held by the batch, refreshed every step
        self._accepting = True

    def start(self) -> Future[TokenizerWrapper]:
        """Start the worker; the future resolves to the tokenizer once the model is loaded."""
        self._thread.start()
        return self._loaded

    def stop_accepting(self) -> None:
        """Refuse new requests from now on (call from the event loop before ``close``)."""
        self._accepting = False

    def close(self) -> None:
        """Stop the worker after its current step; pending requests get an error."""
        self._accepting = False
        self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    async def generate(self, prompt: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        """Yield the request's text as it is generated; leaving early cancels it at once."""
        if not self._accepting:
            raise ServiceUnavailableError(
                f"The model {self.name!r} was just unloaded; retry to load it again",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        job = _Job(prompt, params, lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d))
        self._inbox.put(job)
        self.active_requests += 1
        finished = False
        try:
            while not finished:
                delta = await deltas.get()
                if isinstance(delta, BaseException):
                    finished = True
                    raise delta
                finished = delta.finish_reason is not None
                yield delta
        finally:
            self.active_requests -= 1
            if not finished:
                self._inbox.put(("cancel", job))

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            model, tokenizer = load(str(self.model_path))
            self.weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        except Exception as exc:  # any failure to load is this model's 503, nobody else's
            logger.exception("loading %s failed", self.model_path)
            self._loaded.set_exception(ModelLoadError(f"model {self.name!r} failed to load: {exc}"))
            return
        self._tokenizer = tokenizer
        self._model = model
        self._generator = self._new_generator()
        self._loaded.set_result(tokenizer)
        self._jobs: dict[int, _Job] = {}
        try:
            while self._take_inbox(block=not self._jobs):
                if self._jobs:
                    self._step()
        finally:
            error = ServiceUnavailableError(f"model {self.name!r} was unloaded")
            waiting = list(self._jobs.values())
            while not self._inbox.empty():  # requests that arrived after the stop
                item = self._inbox.get_nowait()
                if isinstance(item, _Job):
                    waiting.append(item)
            for job in waiting:
                job.emit(error)
            self._generator.close()
            # Drop the last references so MLX frees the weights and caches now.
            self._generator = self._model = None  # type: ignore[assignment]
            self.cache_bytes = 0
            mx.clear_cache()

    def _new_generator(self) -> BatchGenerator:
        return BatchGenerator(
            self._model,
            stop_tokens=[[t] for t in self._tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=min(8, self.max_batch_size),
            prefill_step_size=512,
            stream=mx.default_stream(mx.default_device()),
        )

    def _take_inbox(self, block: bool) -> bool:
        """Apply queued inserts and cancels; False when the worker must stop."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            if isinstance(item, tuple):
                self._cancel(item[1])
            else:
                self._insert(item)

    def _insert(self, job: _Job) -> None:
        p = job.params
        try:
            (job.uid,) = self._generator.insert(
                [job.prompt],
                max_tokens=[p.max_tokens],
                samplers=[make_request_sampler(p.temperature, p.top_p, p.seed)],
            )
        except ValueError as exc:
            job.emit(InvalidRequestError(str(exc)))
            return
        job.detokenizer = self._tokenizer.detokenizer
        self._jobs[job.uid] = job

    def _cancel(self, job: _Job) -> None:
        if job.uid is not None and self._jobs.pop(job.uid, None) is not None:
            self._generator.remove([job.uid])

    def _step(self) -> None:
        try:
            _, responses = self._generator.next()
        except Exception as exc:
            # The batch state is unknown after a failed step: fail its requests, start clean.
            logger.exception("generation step failed on %s", self.name)
            for job in self._jobs.values():
                job.emit(ServiceUnavailableError(f"generation failed: {exc}"))
            self._jobs.clear()
            self._generator.close()
            self._generator = self._new_generator()
            return
        for r in responses:
            job = self._jobs.get(r.uid)
            if job is not None:
                self._deliver(job, r.token, r.finish_reason)
        self.cache_bytes = self._generator.prompt_cache_nbytes if self._jobs else 0

    def _deliver(self, job: _Job, token: int, finish_reason: str | None) -> None:
        job.completion_tokens += 1
        detok = job.detokenizer
        if finish_reason != "stop":  # the end-of-sequence token itself is not text
            detok.add_token(token)
        if finish_reason is not None:
            detok.finalize()
        text, stopped = job.stops.feed(detok.last_segment)
        if stopped:
            self._generator.remove([job.uid])
            finish_reason = "stop"
        elif finish_reason is not None:
            text += job.stops.flush()
        if finish_reason is not None:
            del self._jobs[job.uid]
            job.emit(job.delta(text, finish_reason))
        elif text:
            job.emit(job.delta(text))
