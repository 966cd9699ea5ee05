"""What a service plugin declares: its key prefix, default model and prompt policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

_PREFIX = re.compile(r"^[a-z][a-z0-9_]*_$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class PromptPolicy(BaseModel):
    """How a service shapes every chat request before generation.

    Request values win over these defaults; caps are never exceeded.
    """

    model_config = ConfigDict(frozen=True)

    system_prompt: str | None = Field(
        None, description="Used as the system message when a request brings none."
    )
    temperature: float = Field(0.7, ge=0, le=2, description="Default sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Default nucleus-sampling mass.")
    max_tokens: int = Field(512, gt=0, description="Default max_tokens when a request omits it.")
    max_tokens_cap: int = Field(2048, gt=0, description="Largest max_tokens a request may ask.")
    history_trim: Literal["oldest", "error"] = Field(
        "oldest",
        description="When session history and the request exceed the model's context: drop "
        "the oldest history messages (the response says how many), or answer 413.",
    )
    allowed_models: tuple[str, ...] = Field(
        (), description='Models a caller may ask for instead of the default; "*" allows any.'
    )


@dataclass(frozen=True)
class ServiceSpec:
    """A service: callers whose key starts with ``key_prefix`` are served by it.

    ``router``, if given, is mounted under ``/api/v1/<name>/``.
    """

    name: str
    key_prefix: str
    default_model: str
    policy: PromptPolicy = field(default_factory=PromptPolicy)
    description: str = ""
    router: APIRouter | None = None

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
