"""Model names, aliases and stand-ins."""

import pytest

from mlx_host.errors import NotFoundError, ServiceUnavailableError
from mlx_host.models.registry import ModelRegistry
from mlx_host.models.spec import EMBEDDED_LLM, ModelSpec


def registry(stand_in: str = EMBEDDED_LLM.name) -> ModelRegistry:
    reg = ModelRegistry(stand_in=stand_in)
    reg.register(EMBEDDED_LLM)
    reg.declare("qwen3-14b")
    return reg


def test_alias_resolves_to_its_model() -> None:
    assert registry().resolve("smollm2").spec is EMBEDDED_LLM


def test_declared_default_without_weights_uses_the_stand_in() -> None:
    resolved = registry().resolve("qwen3-14b")
    assert resolved.stand_in and resolved.spec is EMBEDDED_LLM


def test_configured_source_replaces_the_declaration() -> None:
    reg = registry()
    reg.register(ModelSpec(name="qwen3-14b", source="/models/qwen"))
    reg.declare("qwen3-14b")
    resolved = reg.resolve("qwen3-14b")
    assert not resolved.stand_in and resolved.spec.source == "/models/qwen"


def test_no_stand_in_is_503_and_unknown_is_404() -> None:
    with pytest.raises(ServiceUnavailableError, match="qwen3-14b"):
        registry(stand_in="").resolve("qwen3-14b")
    with pytest.raises(NotFoundError):
        registry().resolve("nope")
