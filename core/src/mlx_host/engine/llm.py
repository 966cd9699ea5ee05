"""The engine of ``llm`` models: mlx-lm, one continuous batch per model (see ``scheduler``).

Sources are converted once into the cache when they are GGUF files or Hugging Face
directories, in the weight format that is fast on this device.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from mlx_host.engine import memory
from mlx_host.engine.device import preferred_weight_format
from mlx_host.engine.grammar import GrammarCompiler
from mlx_host.engine.scheduler import BatchScheduler
from mlx_host.errors import InvalidRequestError, ModelLoadError
from mlx_host.fim import fim_prompt, fim_tokens
from mlx_host.generation import Delta, TextRequest, ToolCallFormat
from mlx_host.models.engine import Engine, EngineState, PreparedModel
from mlx_host.models.sources import needs_conversion, prepare, stored_format

if TYPE_CHECKING:
    from mlx_host.models.memory import KVClaim
    from mlx_host.models.spec import ModelSpec
    from mlx_host.settings import Settings

logger = logging.getLogger(__name__)


def _weight_format(spec: ModelSpec, settings: Settings) -> str:
    """The format a model is converted to on this device (its own override first)."""
    return preferred_weight_format(spec.weight_format or settings.weight_format)


class LLMEngine(Engine):
    """Generates text for every service from one batch per model, in its own thread."""

    kind = "llm"
    uses_mlx = True

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """An MLX directory: as it is, or converted (and cached) from GGUF or Hugging Face."""
        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        fmt = _weight_format(spec, settings)
        path = prepare(spec.source, settings.cache_dir, fmt)
        # prepare() writes conversions under the cache; anything else is served as stored.
        converted = path.is_relative_to(settings.cache_dir / "models")
        return PreparedModel(path, fmt if converted else stored_format(path))

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """The converted format, or the stored one for MLX directories."""
        try:
            if spec.source is None:
                return "unavailable"
            if needs_conversion(spec.source):
                return _weight_format(spec, settings)
            return stored_format(Path(spec.source).expanduser())
        except ModelLoadError:
            return "unavailable"

    def __init__(
        self, spec: ModelSpec, prepared: PreparedModel, settings: Settings, claim: KVClaim
    ) -> None:
        super().__init__(spec, prepared, settings, claim)
        memory.set_buffer_cache_limit(settings.mlx_cache_limit_bytes)
        self.scheduler = BatchScheduler(
            prepared.path,
            name=spec.name,
            claim=claim,
            max_batch_size=settings.max_batch_size,
            max_queued=settings.max_queued_requests,
            queue_timeout=settings.queue_timeout_seconds,
            prompt_cache_bytes=settings.prompt_cache_bytes,
            service_weights=settings.service_weights,
        )
        config = json.loads((prepared.path / "config.json").read_text())
        self.context_length: int | None = spec.context_length or config.get(
            "max_position_embeddings"
        )
        self.tokenizer: Any = None
        self._grammars: GrammarCompiler | None = None

    async def start(self) -> None:
        """Load the model in the scheduler's worker thread."""
        self.tokenizer = await asyncio.wrap_future(self.scheduler.start())

    @property
    def memory_bytes(self) -> int:
        """Weights, the KV caches of the running batch, and the prompt cache."""
        s = self.scheduler
        return s.weight_bytes + s.kv_bytes + s.prompt_cache_bytes

    @property
    def claimed_in_use_bytes(self) -> int:
        """The running batch's KV caches, which its claim covers."""
        return self.scheduler.kv_bytes

    @property
    def busy(self) -> bool:
        """Requests run or wait."""
        return self.scheduler.active_requests > 0

    @property
    def state(self) -> EngineState:
        """The worker's state."""
        return self.scheduler.state

    def stop_accepting(self) -> None:
        """New requests get 503 from now on."""
        self.scheduler.stop_accepting()

    async def close(self, wait_seconds: float) -> None:
        """Stop the worker (leaving it behind if it is stuck for ``wait_seconds``)."""
        await asyncio.to_thread(self.scheduler.close, wait_seconds)

    def describe(self) -> dict[str, Any]:
        """The batch's requests and caches, and the row counts its products are padded to."""
        s = self.scheduler
        return {
            "weight_bytes": s.weight_bytes,
            "kv_cache_bytes": s.kv_bytes,
            "kv_claimed_bytes": s.kv_claimed_bytes,
            "kv_bytes_per_token": s.kv_bytes_per_token,
            "padded_rows": {str(n): p for n, p in s.row_padding.items()},
            "prompt_cache_bytes": s.prompt_cache_bytes,
            "running_requests": s.running_requests,
            "queued_requests": max(0, s.active_requests - s.running_requests),
            "waiting_for": s.admission.waiting_for,
            "admitted_requests": s.admission.admitted,
            "queue_wait_seconds": s.admission.wait_seconds,
            "refused_requests": dict(s.admission.refused),
            "draft_tokens": {"accepted": s.drafts.accepted, "rejected": s.drafts.rejected},
        }

    # -- text generation ----------------------------------------------------------------

    @property
    def reasoning_tags(self) -> tuple[str, str] | None:
        """The think tags mlx-lm found in the tokenizer's vocabulary (None: none)."""
        if not self.tokenizer.has_thinking:
            return None
        return self.tokenizer.think_start, self.tokenizer.think_end

    @property
    def tool_format(self) -> ToolCallFormat | None:
        """The tool-call format mlx-lm chose from the chat template (None: no tools)."""
        t = self.tokenizer
        if not t.has_tool_calling:
            return None
        starts: tuple[int, ...] = tuple(t.tool_call_start_tokens or ())
        ends: tuple[int, ...] = tuple(t.tool_call_end_tokens or ())
        return ToolCallFormat(
            t.tool_call_start,
            t.tool_call_end or "",
            t.tool_parser,
            family=t.tool_parser.__module__.rsplit(".", 1)[-1],
            start_id=starts[0] if len(starts) == 1 else None,
            end_id=ends[0] if len(ends) == 1 else None,
        )

    @property
    def template_options(self) -> frozenset[str]:
        """The thinking switches its chat template reads (a Jinja template names them; mlx-lm
        maps enable_thinking onto a custom renderer's own switch)."""
        source = self.tokenizer._tokenizer.chat_template
        if not isinstance(source, str):
            return frozenset({"enable_thinking"} if self.tokenizer.has_thinking else ())
        return frozenset(o for o in ("enable_thinking", "reasoning_effort") if o in source)

    def chat_prompt(
        self, messages: list[dict[str, Any]], options: dict[str, Any] | None = None
    ) -> list[int]:
        """Tokens of ``messages`` in the model's chat template, ready for the answer."""
        try:
            tokens = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, **(options or {})
            )
        except TemplateError as exc:
            if type(exc) is not TemplateError:  # a broken template, not the caller's mistake
                logger.exception("the chat template of %s failed", self.spec.name)
                raise InvalidRequestError(
                    "The model's chat template cannot render these messages", param="messages"
                ) from exc
            # Raised by the template's own raise_exception: its words are meant for callers.
            raise InvalidRequestError(
                f"The model's chat template refused the messages: {exc.message}",
                param="messages",
            ) from exc
        except Exception as exc:
            logger.exception("the chat template of %s failed", self.spec.name)
            raise InvalidRequestError(
                "The model's chat template cannot render these messages", param="messages"
            ) from exc
        return list(tokens)

    def encode(self, text: str) -> list[int]:
        """Tokens of plain text."""
        return list(self.tokenizer.encode(text))

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens included."""
        return str(self.tokenizer.decode(tokens))

    @functools.cached_property
    def _fim(self) -> tuple[list[int], tuple[int, int, int]] | None:
        """What starts every FIM prompt (BOS, where the tokenizer starts every text with it,
        as DeepSeek-Coder's FIM prompts do) and the FIM token ids; read from the vocabulary
        once (None: it has no FIM tokens)."""
        tokens = fim_tokens(self.tokenizer.get_vocab())
        if tokens is None:
            return None
        bos = self.tokenizer.bos_token_id
        lead = [bos] if bos is not None and self.tokenizer.encode("x")[:1] == [bos] else []
        return lead, tokens

    def fill_in_middle(self, prefix: str, suffix: str) -> list[int] | None:
        """The FIM prompt in the format of the tokenizer's FIM tokens (None: it has none)."""
        if self._fim is None:
            return None
        lead, tokens = self._fim

        def encode(text: str) -> list[int]:
            # Code that contains a special token's text stays text.
            return list(
                self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
            )

        return lead + fim_prompt(tokens, encode, prefix, suffix)

    async def generate(self, request: TextRequest) -> AsyncIterator[Delta]:
        """The answer from the shared batch, held to the request's format (400 naming what
        cannot be enforced, before any text)."""
        vocabulary = len(self.tokenizer._tokenizer)
        if any(not 0 <= token < vocabulary for token, _ in request.params.logit_bias):
            raise InvalidRequestError(
                f"logit_bias has a token id outside the model's vocabulary (0 to {vocabulary - 1})",
                param="logit_bias",
            )
        constraint = None
        if request.format is not None:
            if self._grammars is None:
                self._grammars = GrammarCompiler(self.tokenizer)
            constraint = await asyncio.to_thread(self._grammars.constraint, request.format)
        deltas = self.scheduler.generate(
            request.prompt, request.params, constraint, request.capability == "completion",
            request.service,
        )  # fmt: skip
        async with aclosing(deltas):  # type: ignore[type-var]
            async for delta in deltas:
                yield delta
