"""What chat and text completions share: the service's choice of model and sampling, the
engine request, and the answer, whole or streamed."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request

from mlx_host.api.access import record_of
from mlx_host.api.answers import (
    ChoiceBuilder,
    OnFinish,
    chunk_events,
    merged,
    shaped_answer,
    usage,
)
from mlx_host.api.policy import output_format, sampling_params
from mlx_host.api.schemas import GenerationRequest
from mlx_host.errors import ModelLoadError
from mlx_host.generation import Delta, OutputFormat, SamplingParams, TextGenerator, TextRequest
from mlx_host.host import Host
from mlx_host.models.manager import LoadedModel
from mlx_host.services import CAPABILITY_KINDS, ServiceSpec

TextCapability = Literal["chat", "completion"]
#: Builds the one choice of a whole (not streamed) answer from its text and last delta.
WholeChoice = Callable[[str, Delta], dict[str, Any]]


@dataclass
class TextCall:
    """A text request checked against its service's policy: which model, how to sample."""

    host: Host
    service: ServiceSpec
    capability: TextCapability
    model_name: str
    params: SamplingParams
    format: OutputFormat | None = None

    @classmethod
    def plan(
        cls, host: Host, service: ServiceSpec, capability: TextCapability, body: GenerationRequest
    ) -> TextCall:
        """Choose the model and sampling (404, 403 or 400 before anything loads)."""
        name = host.models.registry.choose(service, capability, body.model)
        params = sampling_params(
            body, service, host.settings.max_tokens_limit, capability == "completion"
        )
        return cls(host, service, capability, name, params, output_format(body, service))

    async def load(self) -> tuple[LoadedModel, TextGenerator]:
        """The loaded model and its engine."""
        model = await self.host.models.get(self.model_name, CAPABILITY_KINDS[self.capability])
        if not isinstance(model.engine, TextGenerator):
            raise ModelLoadError(f"The engine of {model.name!r} does not generate text")
        return model, model.engine

    def generate(self, engine: TextGenerator, prompt: list[int]) -> AsyncIterator[Delta]:
        """The engine's answer to ``prompt``, sampled as planned."""
        return engine.generate(
            TextRequest(
                prompt, self.params, self.service.name, self.model_name, self.capability,
                self.format,
            )
        )  # fmt: skip

    async def answer(
        self,
        deltas: AsyncIterator[Delta],
        head: dict[str, Any],
        body: GenerationRequest,
        request: Request,
        *,
        objects: tuple[str, str],
        chunk: ChoiceBuilder,
        whole: WholeChoice,
        on_finish: OnFinish,
        opening: dict[str, Any] | None = None,
    ) -> Any:
        """Answer with ``deltas`` (``generate``'s): server-sent events when the body asks to
        stream, else one JSON body; ``objects`` names the object of each (whole, chunk), and
        ``on_finish`` adds its fields to the end of either."""
        whole_object, chunk_object = objects
        record = record_of(request)
        record.model = head["model"]

        def events(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[str]:
            return chunk_events(
                first, rest, {**head, "object": chunk_object}, chunk, body.include_usage(),
                on_finish, opening, record,
            )  # fmt: skip

        async def whole_answer(deltas: list[Delta]) -> dict[str, Any]:
            text, last = merged(deltas)
            return {
                **head,
                "object": whole_object,
                "choices": [whole(text, last)],
                "usage": usage(last),
                **await on_finish(text),
            }

        return await shaped_answer(deltas, request, body.stream, events, whole_answer)


def response_head(prefix: str, model: LoadedModel) -> dict[str, Any]:
    """The fields every response and chunk of one answer repeats."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
