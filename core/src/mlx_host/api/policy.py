"""A service's policy applied to a generation request: which model, which sampling limits."""

from __future__ import annotations

from mlx_host.api.schemas import GenerationRequest
from mlx_host.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from mlx_host.generation import SamplingParams
from mlx_host.models.registry import ModelRegistry
from mlx_host.services import ServiceSpec


def choose_model(service: ServiceSpec, requested: str | None, registry: ModelRegistry) -> str:
    """The model to serve: the service default unless the caller may have another; 404 for a
    name the server does not know, 403 for one the service may not use. Aliases are the same
    model as their name, on either side of the check."""
    name = service.default_model if requested in (None, "", "default") else requested
    spec = registry.find(name)
    if spec is None:
        raise NotFoundError(
            f"The model {name!r} does not exist", param="model", code="model_not_found"
        )
    policy = service.policy
    permitted = {registry.canonical(n) for n in (service.default_model, *policy.allowed_models)}
    if "*" not in policy.allowed_models and spec.name not in permitted:
        raise PermissionDeniedError(
            f"The {service.name!r} service may not use the model {name!r}",
            param="model",
            code="model_not_allowed",
        )
    return spec.name


def sampling_params(body: GenerationRequest, service: ServiceSpec, limit: int) -> SamplingParams:
    """The request's sampling parameters with the service's defaults filled in and caps applied."""
    policy = service.policy
    max_tokens = body.requested_max_tokens() or policy.max_tokens
    cap = min(policy.max_tokens_cap, limit)
    if max_tokens > cap:
        raise InvalidRequestError(
            f"max_tokens {max_tokens} exceeds the {service.name!r} service's cap of {cap}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=policy.temperature if body.temperature is None else body.temperature,
        top_p=policy.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
    )
