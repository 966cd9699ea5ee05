"""Turn a chat request (plus any session history) into prompt tokens that fit the model."""

from __future__ import annotations

import json
from typing import Any

from mlx_host.api.schemas import ChatCompletionRequest, ChatMessage
from mlx_host.api.tool_calls import template_messages
from mlx_host.errors import InvalidRequestError, RequestTooLargeError
from mlx_host.generation import TextGenerator
from mlx_host.services import ServicePolicy

Messages = list[dict[str, Any]]


def build_prompt(
    engine: TextGenerator,
    policy: ServicePolicy,
    history: Messages,
    messages: Messages,
    max_tokens: int,
    options: dict[str, Any] | None = None,
    instructions: str | None = None,
) -> tuple[list[int], int]:
    """Prompt tokens for ``history + messages`` after the system prompt (the request's
    ``instructions``, else the policy's unless a message is a system message), and how many
    history messages were dropped to fit the context (the policy's ``history_trim`` rule).

    The request's own messages are never dropped: if they alone do not fit, 413.
    """
    system: Messages = []
    if instructions is not None:
        system = [{"role": "system", "content": instructions}]
    elif policy.system_prompt and not any(m["role"] == "system" for m in history + messages):
        system = [{"role": "system", "content": policy.system_prompt}]
    limit = engine.context_length or 0

    def too_long(prompt: list[int]) -> bool:
        return bool(limit) and len(prompt) + max_tokens > limit

    prompt = engine.chat_prompt(template_messages(system + history + messages), options)
    if too_long(prompt) and history and policy.history_trim == "error":
        raise RequestTooLargeError(
            f"The session history and request need {len(prompt) + max_tokens} tokens with "
            f"max_tokens; the model's context is {limit}",
            param="session_id",
        )
    trimmed = 0
    while too_long(prompt) and trimmed < len(history):
        trimmed += 1
        prompt = engine.chat_prompt(
            template_messages(system + history[trimmed:] + messages), options
        )
    check_fits(prompt, engine.context_length, "messages")
    return prompt, trimmed


def template_options(
    body: ChatCompletionRequest, engine: TextGenerator, model: str
) -> dict[str, Any]:
    """The chat template options a request asks for: ``chat_template_kwargs`` the template
    reads, ``tools`` (unless ``tool_choice`` is none), and ``reasoning_effort`` as the
    template takes it (``none`` needs no switch where the model does not think); 400 naming
    what it cannot."""
    options: dict[str, Any] = {}
    for key, value in (body.chat_template_kwargs or {}).items():
        if key not in engine.template_options:
            takes = ", ".join(sorted(engine.template_options)) or "none"
            raise InvalidRequestError(
                f"{key!r} is not supported by the chat template of {model!r} (it takes: {takes})",
                param=f"chat_template_kwargs.{key}",
                code="unsupported_parameter",
            )
        options[key] = value
    if body.tools and body.tool_choice != "none":
        if engine.tool_format is None:
            raise InvalidRequestError(
                f"tools are not supported by {model!r}: its chat template renders no tools",
                param="tools",
                code="unsupported_parameter",
            )
        options["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    effort = body.reasoning_effort
    if effort is not None:
        if "reasoning_effort" in engine.template_options:
            options["reasoning_effort"] = effort
        elif "enable_thinking" in engine.template_options:
            options["enable_thinking"] = effort not in ("none", "minimal")
        elif effort == "none" and engine.reasoning_tags is None:
            pass  # a model that does not think, asked not to: nothing to switch
        else:
            raise InvalidRequestError(
                f"reasoning_effort is not supported by {model!r}: its chat template has no "
                "reasoning switch",
                param="reasoning_effort",
                code="unsupported_parameter",
            )
    return options


def check_fits(prompt: list[int], context_length: int | None, param: str) -> None:
    """413 when the prompt alone fills the model's context."""
    if context_length and len(prompt) >= context_length:
        raise RequestTooLargeError(
            f"The prompt is {len(prompt)} tokens; the model's context is {context_length} tokens",
            param=param,
        )


def request_messages(body_messages: list[ChatMessage]) -> Messages:
    """The request's messages as plain OpenAI-shaped dicts (``developer`` is the system role
    to templates); 400 for a tool call whose arguments are not a JSON object."""
    out: Messages = []
    for i, m in enumerate(body_messages):
        message: dict[str, Any] = {
            "role": "system" if m.role == "developer" else m.role,
            "content": m.text(),
        }
        if m.tool_calls:
            for c in m.tool_calls:
                try:
                    is_object = isinstance(json.loads(c.function.arguments), dict)
                except ValueError:
                    is_object = False
                if not is_object:
                    raise InvalidRequestError(
                        f"messages[{i}]: the arguments of tool call {c.id!r} are not a JSON object",
                        param=f"messages.{i}.tool_calls",
                    )
            message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out
