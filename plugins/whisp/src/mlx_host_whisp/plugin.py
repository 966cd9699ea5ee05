"""Registers the `whisp` service: audio transcription."""

from collections.abc import Callable

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

SERVICE = ServiceSpec(
    name="whisp",
    key_prefix="whisp_",
    # The original system's model; where its weights are not installed, the embedded
    # whisper-tiny-en stands in (visible as served_by in /v1/models).
    transcription_model="whisper-large-v3",
    # The chat model that tidies and summarises transcripts.
    chat_model="qwen3-14b",
    completion_model="qwen3-14b",
    description="Audio transcription and transcript clean-up",
    policy=ServicePolicy(
        system_prompt=(
            "You clean up speech transcripts: fix punctuation and obvious mis-hearings, keep "
            "the speaker's words, and never add content."
        ),
        temperature=0.0,
        max_tokens=1024,
        max_tokens_cap=4096,
        allowed_models=("whisper-tiny-en",),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `whisp` service, for keys starting with `whisp_`."""
    register(SERVICE)
