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
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_host.engine.sampling import make_request_sampler
from mlx_host.engine.stops import StopMatcher
from mlx_host.errors import (
    InvalidRequestError,
    ModelLoadError,
    RateLimitError,
    ServiceUnavailableError,
)

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
    cached_tokens: int = 0


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Delta | BaseException], None]
    uid: int | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    detokenizer: Any = None
    stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(list(self.params.stop))

    def delta(self, text: str, finish_reason: str | None = None) -> Delta:
        return Delta(
            text, finish_reason, len(self.prompt), self.completion_tokens, self.cached_tokens
        )


_STOP = object()
_CACHE_KEY = "model"  # one prompt cache per scheduler, so one key


class BatchScheduler:
    """Owns one LLM: loads it in its worker thread and serves every request in one batch."""

    def __init__(
        self,
        model_path: Path,
        *,
        max_batch_size: int = 32,
        max_queued: int = 64,
        prompt_cache_bytes: int = 1 << 30,
        name: str = "llm",
    ) -> None:
        self.model_path = model_path
        self.max_batch_size = max_batch_size
        self.capacity = max_batch_size + max_queued
        self.name = name
        # KV state of finished requests, reused when a new prompt shares a prefix with one.
        self._prompt_cache = LRUPromptCache(max_size=64, max_bytes=prompt_cache_bytes)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loaded: Future[TokenizerWrapper] = Future()
        self._thread = threading.Thread(target=self._run, name=f"mlx-{name}", daemon=True)
        self.active_requests = 0
        self.weight_bytes = 0
        self.cache_bytes = 0  # KV caches held by the batch, refreshed every step
        self._accepting = True
        self._steps = 0

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
        if self.active_requests >= self.capacity:
            raise RateLimitError(
                f"The model {self.name!r} has {self.active_requests} requests running or "
                "queued, its limit; retry shortly",
                code="queue_full",
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
            self._generator = self._model = self._prompt_cache = None  # type: ignore[assignment]
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

    def _cached_prefix(self, prompt: list[int]) -> tuple[Any, list[int]]:
        """The longest cached KV state for ``prompt`` and the tokens still to process."""
        cache, rest = self._prompt_cache.fetch_nearest_cache(_CACHE_KEY, prompt)
        if cache is not None and not rest:
            # The whole prompt is cached, but the generator needs a token to start from.
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _insert(self, job: _Job) -> None:
        p = job.params
        cache, rest = self._cached_prefix(job.prompt)
        job.cached_tokens = len(job.prompt) - len(rest)
        try:
            (job.uid,) = self._generator.insert(
                [rest],
                max_tokens=[p.max_tokens],
                caches=[cache],
                all_tokens=[job.prompt[: job.cached_tokens]],
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
        finished = False
        for r in responses:
            job = self._jobs.get(r.uid)
            if job is not None:
                finished |= self._deliver(job, r)
        self._steps += 1
        if finished or self._steps % 32 == 0:  # summing every layer's cache costs a step's tail
            active = self._generator.prompt_cache_nbytes if self._jobs else 0
            self.cache_bytes = active + self._prompt_cache.nbytes

    def _deliver(self, job: _Job, r: Any) -> bool:
        """Send the token's text to its request; True when the request finished."""
        job.completion_tokens += 1
        finish_reason = r.finish_reason
        detok = job.detokenizer
        if finish_reason != "stop":  # the end-of-sequence token itself is not text
            detok.add_token(r.token)
        if finish_reason is not None:
            detok.finalize()
        text, stopped = job.stops.feed(detok.last_segment)
        if stopped:
            caches = self._generator.remove([job.uid], return_prompt_caches=True)
            if job.uid in caches:
                cache, tokens = caches[job.uid]
                self._prompt_cache.insert_cache(_CACHE_KEY, list(tokens), cache)
            finish_reason = "stop"
        elif finish_reason is not None:
            text += job.stops.flush()
            if r.prompt_cache is not None:
                self._prompt_cache.insert_cache(_CACHE_KEY, list(r.all_tokens), r.prompt_cache)
        if finish_reason is not None:
            del self._jobs[job.uid]
            job.emit(job.delta(text, finish_reason))
            return True
        if text:
            job.emit(job.delta(text))
        return False
