"""Registers the `anydatanext` service (data processing: JSON by default, enforced while
decoding; embeddings; extraction against a schema) and its extraction route."""

from collections.abc import Callable
from typing import Any

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="anydatanext",
    key_prefix="anydatanext_",
    chat_model="qwen3-14b",
    completion_model="qwen3-14b",
    embedding_model="all-minilm-l6-v2",
    description="Data extraction and transformation, and embeddings for search",
    policy=ServicePolicy(
        system_prompt=(
            "You transform and extract data. Output only the requested data, in the requested "
            "format, with no commentary."
        ),
        # Data pipelines need the same output for the same input, and output that parses:
        # every answer is a JSON object unless a request asks for text or another format.
        temperature=0.0,
        response_format="json_object",
        max_tokens=2048,
        max_tokens_cap=4096,
        allowed_models=("*",),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `anydatanext` service, for keys starting with `anydatanext_`."""
    register(SERVICE)


@hookimpl
def mlx_host_register_routes(register: Callable[..., Any]) -> None:
    """``POST /api/v1/anydatanext/extract``, for `anydatanext_` keys only."""
    from mlx_host_anydatanext.extract import router

    register(router, service=SERVICE.name)
