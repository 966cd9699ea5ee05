"""Registers the `vista` service: medical and veterinary reasoning."""

from collections.abc import Callable

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="vista",
    key_prefix="vista_",
    chat_model="qwen3-14b",
    completion_model="qwen3-14b",
    description="Medical and veterinary reasoning",
    policy=ServicePolicy(
        system_prompt=(
            "You are Vista, a careful assistant for medical and veterinary professionals. "
            "Reason step by step, state uncertainty plainly, and never invent doses or "
            "test results."
        ),
        # Clinical answers should be reproducible rather than creative.
        temperature=0.3,
        max_tokens=1024,
        max_tokens_cap=4096,
        allowed_models=("smollm2-135m-instruct",),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `vista` service, for keys starting with `vista_`."""
    register(SERVICE)
