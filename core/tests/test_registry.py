"""Model names, aliases, stand-ins by kind, and which model a service's request gets."""

import pytest

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from mlx_host.models.registry import ModelRegistry
from mlx_host.models.spec import EMBEDDED_LLM, ModelSpec

VOICE = ModelSpec(name="voice-1", source="/models/voice", kind="tts")


def registry(stand_in: str = EMBEDDED_LLM.name) -> ModelRegistry:
    reg = ModelRegistry(stand_ins={"llm": stand_in} if stand_in else {})
    reg.register(EMBEDDED_LLM)
    reg.register(VOICE)
    reg.declare("qwen3-14b", "llm")
    reg.declare("whisper-large-v3", "stt")
    return reg


def test_alias_resolves_to_its_model() -> None:
    assert registry().resolve("smollm2").spec is EMBEDDED_LLM


def test_declared_default_without_weights_uses_the_stand_in_of_its_kind() -> None:
    resolved = registry().resolve("qwen3-14b")
    assert resolved.stand_in and resolved.spec is EMBEDDED_LLM
    with pytest.raises(ServiceUnavailableError, match="whisper-large-v3"):
        registry().resolve("whisper-large-v3")  # no stt stand-in: an llm never stands in


def test_configured_source_replaces_the_declaration() -> None:
    reg = registry()
    reg.register(ModelSpec(name="qwen3-14b", source="/models/qwen"))
    reg.declare("qwen3-14b", "llm")
    resolved = reg.resolve("qwen3-14b")
    assert not resolved.stand_in and resolved.spec.source == "/models/qwen"


def test_no_stand_in_is_503_and_unknown_is_404() -> None:
    with pytest.raises(ServiceUnavailableError, match="qwen3-14b"):
        registry(stand_in="").resolve("qwen3-14b")
    with pytest.raises(NotFoundError):
        registry().resolve("nope")


SPEAKER = ServiceSpec(
    name="speaker",
    key_prefix="speaker_",
    chat_model="qwen3-14b",
    speech_model="voice-1",
    policy=ServicePolicy(allowed_models=("smollm2",)),
)


def test_a_request_gets_its_capabilitys_default_or_an_allowed_model() -> None:
    reg = registry()
    assert reg.choose(SPEAKER, "chat", None) == "qwen3-14b"
    assert reg.choose(SPEAKER, "chat", "default") == "qwen3-14b"
    assert reg.choose(SPEAKER, "speech", None) == "voice-1"
    assert reg.choose(SPEAKER, "chat", "smollm2-135m-instruct") == EMBEDDED_LLM.name


def test_what_a_service_may_not_have_is_refused_clearly() -> None:
    reg = registry()
    with pytest.raises(PermissionDeniedError, match="does not offer transcription"):
        reg.choose(SPEAKER, "transcription", None)
    with pytest.raises(PermissionDeniedError, match="may not use"):
        reg.choose(SPEAKER, "chat", "whisper-large-v3")
    with pytest.raises(NotFoundError):
        reg.choose(SPEAKER, "chat", "gpt-17")
    with pytest.raises(InvalidRequestError, match="tts model"):
        reg.choose(SPEAKER, "chat", "voice-1")  # allowed by name, wrong kind for chat


def test_a_service_must_offer_something() -> None:
    with pytest.raises(ValueError, match="offers nothing"):
        ServiceSpec(name="idle", key_prefix="idle_")
