"""One worker thread per loaded LLM, driving mlx-lm's BatchGenerator as a continuous batch.

MLX streams belong to the thread that made them, and BatchGenerator is not thread-safe, so the
worker thread loads the model, creates the generator and steps it; nothing else touches them.
Requests arrive through a thread-safe inbox and wait in the scheduler's own queue until the
batch has a free row and the memory budget has room for the KV cache the batch may grow to with
them; tokens go back to each request's asyncio queue.

Failures stay where they happen: a request that cannot start fails alone; a step that raises
fails the requests of that batch and the worker goes on with a fresh generator; if the worker
itself dies, every request is answered at once, the model reports ``failed``, and the model
manager starts it again on the next request. A waiting request also checks that its worker is
alive, so none waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import queue
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import (
    KVCache,
    LRUPromptCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)
from mlx_lm.tokenizer_utils import TokenizerWrapper

from mlx_host.engine import memory
from mlx_host.engine.grammar import Constraint
from mlx_host.engine.lean_batch import DraftStats, LeanBatchGenerator, needs_logprobs
from mlx_host.engine.row_padding import plan_row_padding
from mlx_host.engine.sampling import make_logits_processors, make_request_sampler
from mlx_host.errors import (
    GenerationError,
    MLXHostError,
    ModelLoadError,
    RateLimitError,
    ServiceUnavailableError,
)
from mlx_host.generation import Delta, SamplingParams, TokenLogprob
from mlx_host.models.memory import KVClaim
from mlx_host.runtime.threads import MLXThread
from mlx_host.stops import StopMatcher

logger = logging.getLogger(__name__)

State = Literal["loading", "ready", "failed", "stopped"]
#: How often a request waiting for its next token checks that the worker is still alive.
WATCHDOG_SECONDS = 1.0
#: How often requests waiting for memory look again while other models hold it.
ADMIT_RETRY_SECONDS = 0.05
#: When a request wakes an idle model, the worker takes the requests arriving right behind it
#: (until none has come for ``ARRIVAL_GAP_SECONDS``, for ``ARRIVAL_WINDOW_SECONDS`` at most)
#: before its first step, so that a burst starts in one step: otherwise all but the first
#: wait for that first request's step (docs/engine.md has the figures).
ARRIVAL_GAP_SECONDS = 0.005
ARRIVAL_WINDOW_SECONDS = 0.025
#: Steps between measurements of the batch's KV cache (summing every layer costs time).
MEASURE_EVERY_STEPS = 32
#: Prompt tokens of one prompt that one prefill chunk processes (mlx-lm's prefill step).
PREFILL_STEP_TOKENS = 512
#: Prompt tokens one prefill chunk may process over all its prompts: mlx-lm's 8 prompts of a
#: full step. The decoding rows wait for a whole chunk, so this bounds their stall.
PREFILL_CHUNK_TOKENS = 8 * PREFILL_STEP_TOKENS


def prompts_per_prefill(longest: int, max_batch_size: int) -> int:
    """How many waiting prompts to prefill together when the longest still has ``longest``
    tokens to process: as many as fit one chunk of ``PREFILL_CHUNK_TOKENS``. A burst of short
    prompts is prefilled at once, so none waits for the others' chunks and the decoding steps
    between them; long prompts go 8 at a time, as in mlx-lm (docs/engine.md has the figures)."""
    step = max(1, min(longest, PREFILL_STEP_TOKENS))
    return max(1, min(max_batch_size, PREFILL_CHUNK_TOKENS // step))


def kv_bound(lengths: list[int], bytes_per_token: int) -> int:
    """The most KV cache a batch of sequences of at most ``lengths`` tokens can hold: mlx-lm
    pads every row of the batch to the longest one and allocates in blocks of
    ``KVCache.step`` tokens."""
    if not lengths:
        return 0
    blocks = math.ceil(max(lengths) / KVCache.step)
    return len(lengths) * blocks * KVCache.step * bytes_per_token


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Delta | BaseException], None]
    constraint: Constraint | None = None
    trim_space: bool = True  # drop the answer's leading space (chat), or keep it (completions)
    service: str = ""  # who asks: the batch is shared between services by weight
    uid: int | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    detokenizer: Any = None
    arrived: float = field(default_factory=time.monotonic)
    stops: StopMatcher = field(init=False)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent

    def __post_init__(self) -> None:
        self.stops = StopMatcher(list(self.params.stop))

    @property
    def length(self) -> int:
        """The most tokens this request's KV cache can hold."""
        return len(self.prompt) + self.params.max_tokens

    def delta(self, text: str, finish_reason: str | None = None) -> Delta:
        logprobs, self.logprobs = tuple(self.logprobs), []
        return Delta(
            text, finish_reason, len(self.prompt), self.completion_tokens, self.cached_tokens,
            logprobs, stop_sequence=self.stops.matched if finish_reason else None,
        )  # fmt: skip


def _keep_leading_space(detokenizer: Any) -> None:
    """Make one of mlx-lm's streaming detokenizers keep the first token's leading space (they
    drop it, as a chat answer wants; a plain-text continuation needs it)."""
    if hasattr(detokenizer, "trim_space"):  # SentencePiece
        detokenizer.trim_space = False
    if hasattr(detokenizer, "_maybe_trim_space"):  # byte-level BPE
        detokenizer._maybe_trim_space = lambda text: text


def _emitter(
    loop: asyncio.AbstractEventLoop, deltas: asyncio.Queue[Delta | BaseException]
) -> Callable[[Delta | BaseException], None]:
    """Hands a worker's output to the request's event loop, from the worker thread."""

    def emit(item: Delta | BaseException) -> None:
        # A closed loop means nobody waits for this request any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deltas.put_nowait, item)

    return emit


@dataclass
class AdmissionStats:
    """What a model's queue did since it loaded (read by ``/metrics``): requests admitted to
    the batch and the seconds they waited in all, requests turned away by reason
    (``queue_full``, ``queue_timeout``, ``insufficient_memory``), and what the oldest waiting
    request waits for now (``batch_row``, ``memory``; None when none waits)."""

    admitted: int = 0
    wait_seconds: float = 0.0
    refused: Counter[str] = field(default_factory=Counter)
    waiting_for: str | None = None


@dataclass(frozen=True)
class _Cancel:
    job: _Job


_STOP = object()
_CACHE_KEY = "model"  # one prompt cache per scheduler, so one key


class BatchScheduler:
    """Owns one LLM: loads it in its worker thread and serves every request in one batch."""

    def __init__(
        self,
        model_path: Path,
        *,
        claim: KVClaim,
        max_batch_size: int = 32,
        max_queued: int = 64,
        queue_timeout: float = 300.0,
        prompt_cache_bytes: int = 1 << 30,
        name: str = "llm",
        service_weights: dict[str, float] | None = None,
    ) -> None:
        self.model_path = model_path
        self.max_batch_size = max_batch_size
        self.capacity = max_batch_size + max_queued
        # Services share the batch and its queue by weight (1 unless set): see generate and
        # _next_waiting.
        self._weights = service_weights or {}
        self._active_by_service: Counter[str] = Counter()  # in the event loop
        self.queue_timeout = queue_timeout
        self.name = name
        self.state: State = "loading"
        self.active_requests = 0  # running or queued, counted in the event loop
        self.weight_bytes = 0
        self.kv_bytes = 0  # KV caches of the running batch, measured every few steps
        self.prompt_cache_bytes = 0  # KV state kept for reuse across turns
        self.kv_bytes_per_token = 0
        self.row_padding: dict[int, int] = {}  # rows → padded rows, planned at load on the CPU
        self._claim = claim
        # KV state of finished requests, reused when a new prompt shares a prefix with one.
        self._prompt_cache = LRUPromptCache(max_size=64, max_bytes=prompt_cache_bytes)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loaded: Future[TokenizerWrapper] = Future()
        self._thread = MLXThread(self._run, name=f"mlx-{name}")
        self._accepting = True
        self._steps = 0
        self._arrivals = 0  # requests taken from the inbox, ever
        self._jobs: dict[int, _Job] = {}  # in the generator, by uid
        self._waiting: deque[_Job] = deque()  # received, not yet admitted
        self._freed_for: _Job | None = None  # the waiting request memory was last freed for
        self.admission = AdmissionStats()
        self.drafts = DraftStats()  # speculative decoding of lone greedy rows

    @property
    def running_requests(self) -> int:
        """Requests in the batch now (the rest of ``active_requests`` wait for a row)."""
        return len(self._jobs)

    @property
    def kv_claimed_bytes(self) -> int:
        """Bytes of the budget claimed for the KV caches of running requests."""
        return self._claim.nbytes

    def start(self) -> Future[TokenizerWrapper]:
        """Start the worker; the future resolves to the tokenizer once the model is loaded."""
        self._thread.start()
        return self._loaded

    def stop_accepting(self) -> None:
        """Refuse new requests from now on (call from the event loop before ``close``)."""
        self._accepting = False

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the worker after its current step; its requests get an error. Returns False
        if the worker did not stop within ``timeout`` seconds (it is then left behind, and
        its requests are answered by their own watchdogs)."""
        self._accepting = False
        self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("the worker of %s did not stop within %.0f s", self.name, timeout)
            self.state = "stopped"
            return False
        return True

    async def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        constraint: Constraint | None = None,
        continuation: bool = False,
        service: str = "",
    ) -> AsyncIterator[Delta]:
        """Yield the request's text as it is generated (held to ``constraint``, if any);
        leaving early cancels it at once. A ``continuation`` of plain text keeps a leading
        space (a chat answer loses it, as mlx-lm's detokenizers do)."""
        if not self._accepting or self.state != "ready":
            raise self._gone_error()
        if not self._has_place(service):
            self.admission.refused["queue_full"] += 1
            waiting, mine = self.active_requests, self._active_by_service[service]
            raise RateLimitError(
                f"The model {self.name!r} has {waiting} request{'s' * (waiting != 1)} running "
                f"or queued, its limit, and {mine} of them are this service's, its share; "
                "retry shortly",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        deltas: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        emit = _emitter(asyncio.get_running_loop(), deltas)
        job = _Job(prompt, params, emit, constraint, trim_space=not continuation, service=service)
        self._inbox.put(job)
        self.active_requests += 1
        self._active_by_service[service] += 1
        finished = False
        try:
            while not finished:
                delta = await self._next(job, deltas)
                if isinstance(delta, BaseException):  # the worker has dropped the request
                    finished = True
                    raise delta
                finished = delta.finish_reason is not None
                yield delta
        finally:
            self.active_requests -= 1
            self._active_by_service[service] -= 1
            if not finished:
                self._inbox.put(_Cancel(job))

    def _has_place(self, service: str) -> bool:
        """Whether a new request of ``service`` may run or queue. Below capacity, any may;
        at capacity, a service still under its share of the places (by weight, among the
        services with requests here) may, up to twice the capacity: so one service's flood
        never locks another out."""
        if self.active_requests < self.capacity:
            return True
        if self.active_requests >= 2 * self.capacity:
            return False
        active = {s for s, n in self._active_by_service.items() if n > 0} | {service}
        total = sum(self._weights.get(s, 1.0) for s in active)
        share = self.capacity * self._weights.get(service, 1.0) / total
        return self._active_by_service[service] < share

    async def _next(
        self, job: _Job, deltas: asyncio.Queue[Delta | BaseException]
    ) -> Delta | BaseException:
        """The request's next delta. Raises, without waiting for the worker, when the request
        has waited longer than the queue timeout to start, or its worker is gone."""
        while deltas.empty():
            try:
                return await asyncio.wait_for(deltas.get(), WATCHDOG_SECONDS)
            except TimeoutError:
                if not deltas.empty():
                    break
                if self.state != "ready" or not self._thread.is_alive():
                    raise self._gone_error() from None
                if job.uid is None and time.monotonic() - job.arrived > self.queue_timeout:
                    self.admission.refused["queue_timeout"] += 1
                    raise self._timed_out() from None
        return deltas.get_nowait()

    def _gone_error(self) -> MLXHostError:
        if self.state == "failed":
            return ServiceUnavailableError(
                f"The model {self.name!r} stopped working; retry and it will be restarted",
                code="model_failed",
                headers={"Retry-After": "1"},
            )
        return ServiceUnavailableError(
            f"The model {self.name!r} was just unloaded; retry to load it again",
            headers={"Retry-After": "1"},
        )

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
        except BaseException:  # any failure to load is this model's 503, nobody else's
            logger.exception("loading %s from %s failed", self.name, self.model_path)
            self.state = "failed"
            self._loaded.set_exception(
                ModelLoadError(f"The model {self.name!r} could not be loaded (see the server log)")
            )
            return
        self.state = "ready"
        self._loaded.set_result(self._tokenizer)
        try:
            self._serve()
        except BaseException:
            logger.exception("the worker of %s died", self.name)
            self.state = "failed"
        finally:
            if self.state != "failed":
                self.state = "stopped"
            self._shut_down()

    def _load(self) -> None:
        model, tokenizer = load(str(self.model_path))[:2]
        self.weight_bytes = memory.parameter_bytes(model)
        if mx.default_device() == mx.cpu:
            try:
                self.row_padding = plan_row_padding(model, self.max_batch_size)
            except Exception:  # a speed-up that fails leaves the model as it loaded
                logger.exception("%s: planning the products' rows failed", self.name)
            logger.info("%s pads its products' rows: %s", self.name, self.row_padding or "none")
        self._model, self._tokenizer = model, tokenizer
        self.kv_bytes_per_token = self._measure_kv_per_token()
        self._generator = self._new_generator()

    def _needs_logprobs(self, uid: int) -> bool:
        job = self._jobs.get(uid)
        p = job.params if job is not None else None
        return p is not None and needs_logprobs(p.temperature, p.top_p, p.logprobs)

    def _measure_kv_per_token(self) -> int:
        """Bytes of KV cache per token of one sequence, measured on this model: a one-token
        forward pass allocates one block of ``KVCache.step`` tokens in every layer."""
        cache = make_prompt_cache(self._model)
        self._model(mx.array([[0]]), cache=cache)
        mx.eval([c.state for c in cache])
        return max(1, math.ceil(sum(c.nbytes for c in cache) / KVCache.step))

    def _new_generator(self) -> BatchGenerator:
        return LeanBatchGenerator(
            self._needs_logprobs,
            self.drafts,
            model=self._model,
            stop_tokens=[[t] for t in self._tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=min(8, self.max_batch_size),
            prefill_step_size=PREFILL_STEP_TOKENS,
            stream=mx.default_stream(mx.default_device()),
        )

    def _serve(self) -> None:
        busy = False
        while True:
            if busy and not self._jobs:  # the batch just emptied: give back what it used
                busy = False
                self._measure()
                memory.release_unused()
            idle = not self._jobs and not self._waiting
            timeout = 0.0 if self._jobs else ADMIT_RETRY_SECONDS if self._waiting else None
            if not self._take_inbox(timeout):
                return
            if idle and self._waiting and not self._take_arrivals():
                return
            self._admit()
            if self._jobs:
                self._step()
                busy = True

    def _take_inbox(self, timeout: float | None) -> bool:
        """Receive new requests and cancels (waiting up to ``timeout`` seconds for the first,
        forever for None); False when the worker must stop."""
        block = timeout != 0
        while True:
            try:
                item = self._inbox.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            if isinstance(item, _Cancel):
                self._cancel(item.job)
            else:
                self._waiting.append(item)
                self._arrivals += 1

    def _take_arrivals(self) -> bool:
        """Take the requests arriving right behind the one that woke the worker (see
        ``ARRIVAL_GAP_SECONDS``); False when the worker must stop."""
        deadline = time.monotonic() + ARRIVAL_WINDOW_SECONDS
        while len(self._waiting) < self.max_batch_size:  # more could not start together
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            arrivals = self._arrivals
            if not self._take_inbox(min(ARRIVAL_GAP_SECONDS, left)):
                return False
            if self._arrivals == arrivals:
                return True
        return True

    def _kv_bound(self, jobs: list[_Job]) -> int:
        """The most KV cache a batch of ``jobs`` can hold (see ``kv_bound``)."""
        return kv_bound([j.length for j in jobs], self.kv_bytes_per_token)

    def _next_waiting(self) -> _Job:
        """The waiting request to start next: the oldest of the service with the fewest
        running requests for its weight (so a service with work waiting gets the next free
        rows, however many requests another one sent first)."""
        running: Counter[str] = Counter(j.service for j in self._jobs.values())
        first: dict[str, _Job] = {}
        for job in self._waiting:
            first.setdefault(job.service, job)
        return min(
            first.values(),
            key=lambda j: (running[j.service] / self._weights.get(j.service, 1.0), j.arrived),
        )

    def _admit(self) -> None:
        """Start waiting requests, fairly between services, while the batch has rows and the
        budget room (and note what the rest wait for)."""
        self._start_waiting()
        stats = self.admission
        if not self._waiting:
            stats.waiting_for = None
        else:
            stats.waiting_for = "batch_row" if len(self._jobs) >= self.max_batch_size else "memory"

    def _start_waiting(self) -> None:
        while self._waiting and len(self._jobs) < self.max_batch_size:
            job = self._next_waiting()
            need = self._kv_bound([*self._jobs.values(), job])
            if self._claim.resize(need):
                self._waiting.remove(job)
                self._insert(job)
            elif self._jobs:
                return  # this batch's running requests will give memory back
            elif self._freed_for is not job:
                # Idle and short of memory: cached prefixes and freed buffers are worth less
                # than a request (freed once per waiting request, not at every look).
                self._freed_for = job
                self._prompt_cache.trim_to(n_bytes=0)
                self._measure()
                memory.release_unused()
            elif self._claim.worth_waiting(need):
                return  # other models will give memory back, or are being evicted
            else:  # nothing will free memory: this request cannot fit now
                self._waiting.remove(job)
                self.admission.refused["insufficient_memory"] += 1
                job.emit(self._too_big(job))

    def _timed_out(self) -> MLXHostError:
        return ServiceUnavailableError(
            f"The model {self.name!r} could not start this request within "
            f"{self.queue_timeout:.0f} s; retry later",
            code="queue_timeout",
            headers={"Retry-After": "5"},
        )

    def _too_big(self, job: _Job) -> MLXHostError:
        need = self._kv_bound([job]) / 1024**3
        return ServiceUnavailableError(
            f"The model {self.name!r} cannot fit this request's KV cache ({need:.2f} GiB for "
            f"{job.length} tokens of prompt and max_tokens) in the memory budget now; lower "
            "max_tokens or retry later",
            code="insufficient_memory",
            headers={"Retry-After": "5"},
        )

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
        try:
            cache, rest = self._cached_prefix(job.prompt)
            job.cached_tokens = len(job.prompt) - len(rest)
            (job.uid,) = self._generator.insert(
                [rest],
                max_tokens=[p.max_tokens],
                caches=[cache],
                all_tokens=[job.prompt[: job.cached_tokens]],
                # None is greedy: mlx-lm batches it with the generator's own sampler.
                samplers=[make_request_sampler(p.temperature, p.top_p, p.seed)],  # type: ignore[list-item]
                # The grammar's mask comes last: nothing may lift a token it forbids.
                logits_processors=[
                    make_logits_processors(
                        p.presence_penalty, p.frequency_penalty, dict(p.logit_bias)
                    )
                    + ([job.constraint] if job.constraint else [])
                ],
            )
        except Exception:
            logger.exception("a request could not start on %s", self.name)
            job.emit(GenerationError())
            self._claim.resize(self._kv_bound(list(self._jobs.values())))
            return
        job.detokenizer = self._tokenizer.detokenizer
        if not job.trim_space:
            _keep_leading_space(job.detokenizer)
        self._jobs[job.uid] = job
        self.admission.admitted += 1
        self.admission.wait_seconds += time.monotonic() - job.arrived

    def _cancel(self, job: _Job) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
        elif job.uid is not None and self._jobs.pop(job.uid, None) is not None:
            self._generator.remove([job.uid])
            self._claim.resize(self._kv_bound(list(self._jobs.values())))

    def _step(self) -> None:
        starting = [j for j in self._jobs.values() if j.completion_tokens == 0]
        if starting:
            longest = max(len(j.prompt) - j.cached_tokens for j in starting)
            self._generator.prefill_batch_size = prompts_per_prefill(longest, self.max_batch_size)
        try:
            _, responses = self._generator.next()
        except Exception:
            # The batch state is unknown after a failed step: fail its requests, start clean.
            logger.exception("a generation step failed on %s", self.name)
            for job in self._jobs.values():
                job.emit(GenerationError())
            self._jobs.clear()
            self._generator.close()
            self._generator = self._new_generator()
            self._claim.resize(0)
            return
        finished = False
        for r in responses:
            receiver = self._jobs.get(r.uid)
            if receiver is None:
                continue
            job = receiver
            try:
                finished |= self._deliver(job, r)
            except Exception:
                logger.exception("delivering a token failed on %s", self.name)
                self._jobs.pop(job.uid, None)  # type: ignore[arg-type]
                self._generator.remove([job.uid])
                job.emit(GenerationError())
                finished = True
        self._steps += 1
        if finished:
            self._claim.resize(self._kv_bound(list(self._jobs.values())))
        if finished or self._steps % MEASURE_EVERY_STEPS == 0:
            self._measure()

    def _measure(self) -> None:
        self.kv_bytes = self._generator.prompt_cache_nbytes if self._jobs else 0
        self.prompt_cache_bytes = self._prompt_cache.nbytes

    def _keep_for_reuse(self, tokens: list[int], cache: list[Any]) -> None:
        # A request's cache is extracted from the batch as lazy slices of the whole batch's
        # buffers: evaluated now, it holds only its own rows; left lazy, every cached prompt
        # kept the batch's buffers alive (measured: 5.5 GB held for 0.3 GB of cached prompts).
        mx.eval([c.state for c in cache])
        self._prompt_cache.insert_cache(_CACHE_KEY, tokens, cache)

    def _deliver(self, job: _Job, r: Any) -> bool:
        """Send the token's text to its request; True when the request finished."""
        job.completion_tokens += 1
        finish_reason = r.finish_reason
        detok = job.detokenizer
        if finish_reason != "stop":  # the end-of-sequence token itself is not text
            detok.add_token(r.token)
            if job.params.logprobs is not None:
                entry = self._token_logprob(r, job.params.logprobs)
                if job.trim_space and job.completion_tokens == 1 and entry.token[:1] == " ":
                    entry = dataclasses.replace(entry, token=entry.token[1:])  # as in the text
                job.logprobs.append(entry)
        if finish_reason is not None:
            detok.finalize()
        text, stopped = job.stops.feed(detok.last_segment)
        if finish_reason is not None:  # the generator has finished it and hands its cache back
            if not stopped:
                text += job.stops.flush()
            if r.prompt_cache is not None:
                self._keep_for_reuse(list(r.all_tokens), r.prompt_cache)
        elif stopped:  # a stop string: the generator still runs it
            caches = self._generator.remove([job.uid], return_prompt_caches=True)
            if job.uid in caches:
                cache, tokens = caches[job.uid]
                self._keep_for_reuse(list(tokens), cache)
        if stopped:
            finish_reason = "stop"
        if job.constraint is not None and job.constraint.error is not None:
            if finish_reason is None:
                self._generator.remove([job.uid])
            del self._jobs[job.uid]  # type: ignore[arg-type]
            job.emit(GenerationError(job.constraint.error))
            return True
        if finish_reason is not None:
            del self._jobs[job.uid]  # type: ignore[arg-type]
            job.emit(job.delta(text, finish_reason))
            return True
        if text:
            job.emit(job.delta(text))
        return False

    def _token_logprob(self, r: Any, alternatives: int) -> TokenLogprob:
        """The chosen token's log probability and the ``alternatives`` most likely tokens',
        from the step's distribution (after any bias, penalty or grammar applied to the row)."""
        row = r.logprobs.reshape(-1)
        top: tuple[tuple[str, float], ...] = ()
        if alternatives:
            ids = mx.argpartition(-row, alternatives - 1)[:alternatives]
            values = row[ids]
            order = mx.argsort(-values)
            chosen = cast(list[int], ids[order].tolist())
            logprobs = cast(list[float], values[order].tolist())
            pairs = zip(chosen, logprobs, strict=True)
            top = tuple((self._tokenizer.decode([i]), v) for i, v in pairs)
        return TokenLogprob(
            self._tokenizer.decode([r.token]), cast(float, row[r.token].item()), top
        )

    def _shut_down(self) -> None:
        """Answer every request this worker still has, and free the model's memory."""
        unanswered = [*self._jobs.values(), *self._waiting]
        while not self._inbox.empty():  # requests that arrived after the stop
            item = self._inbox.get_nowait()
            if isinstance(item, _Job):
                unanswered.append(item)
        for job in unanswered:
            job.emit(self._gone_error())
        self._jobs.clear()
        self._waiting.clear()
        self._claim.release()
        if getattr(self, "_generator", None) is not None:
            self._generator.close()
        # Drop the last references, so that MLX frees the weights and caches before its
        # cache of freed buffers is emptied.
        self._generator = self._model = self._prompt_cache = None  # type: ignore[assignment]
        self.kv_bytes = self.prompt_cache_bytes = self.weight_bytes = 0
        memory.release_unused()
