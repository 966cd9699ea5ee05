"""What a service plugin declares: its key prefix, a default model for each capability it
offers, and its policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

_PREFIX = re.compile(r"^[a-z][a-z0-9_]*_$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: What a service can offer its callers, each through its own endpoints.
Capability = Literal["chat", "completion", "transcription", "speech", "embedding"]
CAPABILITIES: tuple[Capability, ...] = get_args(Capability)
#: The model kind each capability needs.
CAPABILITY_KINDS: dict[Capability, str] = {
    "chat": "llm",
    "completion": "llm",
    "transcription": "stt",
    "speech": "tts",
    "embedding": "embedding",
}


class ServiceLimits(BaseModel):
    """How much one service may ask of the server (None: no limit). Requests and tokens per
    minute are counted across hosts when sessions are in Redis; concurrency per host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Prompt and answer tokens, counted when each answer is done."
    )
    concurrent_requests: int | None = Field(None, gt=0)


class ServicePolicy(BaseModel):
    """How a service shapes every request before the engine sees it.

    Request values win over these defaults; caps are never exceeded.
    """

    model_config = ConfigDict(frozen=True)

    system_prompt: str | None = Field(
        None, description="Used as the system message when a chat request brings none."
    )
    temperature: float = Field(0.7, ge=0, le=2, description="Default sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Default nucleus-sampling mass.")
    max_tokens: int = Field(512, gt=0, description="Default max_tokens when a request omits it.")
    max_tokens_cap: int = Field(2048, gt=0, description="Largest max_tokens a request may ask.")
    completion_stop: tuple[str, ...] = Field(
        (),
        max_length=4,
        description="Stop strings for text completions (and fill in the middle) that name "
        "none: where a completion of code should end, say.",
    )
    response_format: Literal["text", "json_object"] = Field(
        "text",
        description="The answers' form when a request names none: free text, or a JSON "
        "object (enforced while decoding).",
    )
    history_trim: Literal["oldest", "error"] = Field(
        "oldest",
        description="When session history and the request exceed the model's context: drop "
        "the oldest history messages (the response says how many), or answer 413.",
    )
    voice: str | None = Field(
        None,
        description="The voice of speech requests that name none (default: the speech "
        "model's first).",
    )
    allowed_models: tuple[str, ...] = Field(
        (),
        description='Models a caller may ask for instead of the defaults; "*" allows any. '
        "A model serves only the capabilities its kind can.",
    )
    limits: ServiceLimits = Field(
        default_factory=ServiceLimits,
        description="Rate and concurrency limits (settings' service_limits override them).",
    )


@dataclass(frozen=True)
class ServiceSpec:
    """A service: callers whose key starts with ``key_prefix`` are served by it.

    It offers each capability it names a default model for (``chat_model``, ...); a key of a
    service asking for a capability it does not offer gets 403.
    """

    name: str
    key_prefix: str
    chat_model: str | None = None
    completion_model: str | None = None
    transcription_model: str | None = None
    speech_model: str | None = None
    embedding_model: str | None = None
    policy: ServicePolicy = field(default_factory=ServicePolicy)
    description: str = ""

    def __post_init__(self) -> None:
        # The name becomes a URL path segment and part of storage keys.
        if not _NAME.match(self.name):
            raise ValueError(
                f"service name {self.name!r} must be lowercase letters, digits, '-' and '_', "
                "starting with a letter"
            )
        if not _PREFIX.match(self.key_prefix):
            raise ValueError(
                f"service {self.name!r}: key_prefix {self.key_prefix!r} must be lowercase "
                "letters, digits and underscores ending in '_'"
            )
        if not self.capabilities:
            raise ValueError(
                f"service {self.name!r} offers nothing: give a default model for at least one "
                f"capability ({', '.join(f'{c}_model' for c in CAPABILITIES)})"
            )

    def default_model(self, capability: Capability) -> str | None:
        """The model for ``capability`` when a request names none (None: not offered)."""
        model: str | None = getattr(self, f"{capability}_model")
        return model

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        """The capabilities this service offers."""
        return tuple(c for c in CAPABILITIES if self.default_model(c) is not None)

    @property
    def default_models(self) -> dict[Capability, str]:
        """Each offered capability's default model."""
        return {c: m for c in CAPABILITIES if (m := self.default_model(c)) is not None}
