"""Registers the `anydatanext` service: data processing."""

from collections.abc import Callable

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="anydatanext",
    key_prefix="anydatanext_",
    chat_model="qwen3-14b",
    completion_model="qwen3-14b",
    description="Data extraction and transformation",
    policy=ServicePolicy(
        system_prompt=(
            "You transform and extract data. Output only the requested data, in the requested "
            "format, with no commentary."
        ),
        # Data pipelines need the same output for the same input.
        temperature=0.0,
        max_tokens=2048,
        max_tokens_cap=4096,
        allowed_models=("*",),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `anydatanext` service, for keys starting with `anydatanext_`."""
    register(SERVICE)
