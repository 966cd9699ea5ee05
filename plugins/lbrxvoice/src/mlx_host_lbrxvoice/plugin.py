"""Registers the `lbrxvoice` service (spoken answers: speech synthesis and the voice turn) and
its voice-turn route."""

from collections.abc import Callable
from typing import Any

from mlx_host import ServicePolicy, ServiceSpec, hookimpl

#: Answers are heard, not read: short, plain sentences a voice can say as they are written.
VOICE_PROMPT = (
    "You are a voice assistant: everything you write is spoken aloud by a text-to-speech "
    "voice. Answer in one to three short, plain sentences. Never use markdown, lists, "
    "headings, code, emoji or links. Write numbers, units and symbols as they are said: "
    '"twenty degrees Celsius", "five kilometres", "three point five percent", not "20°C", '
    '"5 km" or "3.5%".'
)

SERVICE = ServiceSpec(
    name="lbrxvoice",
    key_prefix="lbrxvoice_",
    chat_model="phi-3",
    completion_model="phi-3",
    # The reference Mac's models; where their weights are not installed, the embedded
    # whisper-tiny-en and hibari stand in (visible as served_by in /v1/models).
    transcription_model="whisper-large-v3-turbo",
    speech_model="kokoro-82m",
    description="Spoken answers: speech synthesis and a voice turn (audio in, audio out)",
    policy=ServicePolicy(
        system_prompt=VOICE_PROMPT,
        temperature=0.7,
        # A spoken answer of three sentences is well under 160 tokens; longer is a mistake.
        max_tokens=160,
        max_tokens_cap=1024,
        voice="af_heart",
        allowed_models=("smollm2-135m-instruct", "whisper-tiny-en", "hibari-tts"),
    ),
)


@hookimpl
def mlx_host_register_services(register: Callable[[ServiceSpec], None]) -> None:
    """The `lbrxvoice` service, for keys starting with `lbrxvoice_`."""
    register(SERVICE)


@hookimpl
def mlx_host_register_routes(register: Callable[..., Any]) -> None:
    """``POST /api/v1/lbrxvoice/turn``, for `lbrxvoice_` keys only."""
    from mlx_host_lbrxvoice.turn import router

    register(router, service=SERVICE.name)
