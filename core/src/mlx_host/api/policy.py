"""A service's policy applied to a generation request: sampling defaults and caps, and the
form of the answer.

(Which model a request gets is the registry's ``choose``.)
"""

from __future__ import annotations

from mlx_host.api.schemas import GenerationRequest
from mlx_host.errors import InvalidRequestError
from mlx_host.generation import OutputFormat, SamplingParams
from mlx_host.services import ServiceSpec


def sampling_params(
    body: GenerationRequest, service: ServiceSpec, limit: int, completion: bool = False
) -> SamplingParams:
    """The request's sampling parameters with the service's defaults filled in and caps
    applied (a text ``completion`` that names no stop gets the service's completion stops)."""
    policy = service.policy
    max_tokens = body.requested_max_tokens() or policy.max_tokens
    cap = min(policy.max_tokens_cap, limit)
    if max_tokens > cap:
        field = body.max_tokens_field()
        raise InvalidRequestError(
            f"{field} {max_tokens} exceeds the {service.name!r} service's cap of {cap}",
            param=field,
            code="max_tokens_too_large",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=policy.temperature if body.temperature is None else body.temperature,
        top_p=policy.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_list() or (policy.completion_stop if completion else ()),
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias(body.logit_bias or {}),
        logprobs=body.logprobs_wanted(),
    )


def _logit_bias(bias: dict[str, float]) -> tuple[tuple[int, float], ...]:
    """OpenAI's token-id strings as ids (whether they are in the model's vocabulary is the
    engine's to say)."""
    pairs = []
    for key, value in bias.items():
        if not key.isdigit():
            raise InvalidRequestError(
                f"logit_bias keys are token ids, not {key[:40]!r}", param="logit_bias"
            )
        pairs.append((int(key), value))
    return tuple(pairs)


def output_format(body: GenerationRequest, service: ServiceSpec) -> OutputFormat | None:
    """The form the answer is held to: the request's ``response_format``, else the service's."""
    if body.response_format is not None:
        return body.response_format.output_format()
    return OutputFormat("json_object") if service.policy.response_format == "json_object" else None
