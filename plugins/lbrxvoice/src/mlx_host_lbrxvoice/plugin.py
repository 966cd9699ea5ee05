"""Registers the `lbrxvoice` service: voice assistant replies."""

from collections.abc import Callable

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="lbrxvoice",
    key_prefix="lbrxvoice_",
    chat_model="phi-3",
    completion_model="phi-3",
    description="Short conversational replies meant to be spoken",
    policy=ServicePolicy(
        system_prompt=(
            "You are a voice assistant. Reply in one to three short spoken sentences, with no "
            "markdown, lists or code."
        ),
        temperature=0.8,
        # Spoken replies are short; long ones are a mistake, not a feature.
        max_tokens=256,
        max_tokens_cap=1024,
        allowed_models=("smollm2-135m-instruct",),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `lbrxvoice` service, for keys starting with `lbrxvoice_`."""
    register(SERVICE)
