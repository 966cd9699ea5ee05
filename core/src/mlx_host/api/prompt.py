"""Turn a chat request (plus any session history) into prompt tokens that fit the model."""

from __future__ import annotations

import logging

from jinja2 import TemplateError

from mlx_host.api.schemas import ChatMessage
from mlx_host.errors import InvalidRequestError, RequestTooLargeError
from mlx_host.models.manager import LoadedModel
from mlx_host.services import PromptPolicy

logger = logging.getLogger(__name__)
Messages = list[dict[str, str]]


def _template(model: LoadedModel, messages: Messages) -> list[int]:
    try:
        return list(model.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    except TemplateError as exc:
        if type(exc) is not TemplateError:  # a broken template, not the caller's mistake
            logger.exception("the chat template of %s failed", model.name)
            raise InvalidRequestError(
                "The model's chat template cannot render these messages", param="messages"
            ) from exc
        # Raised by the template's own raise_exception: its words are meant for callers.
        raise InvalidRequestError(
            f"The model's chat template refused the messages: {exc.message}", param="messages"
        ) from exc
    except Exception as exc:
        logger.exception("the chat template of %s failed", model.name)
        raise InvalidRequestError(
            "The model's chat template cannot render these messages", param="messages"
        ) from exc


def build_prompt(
    model: LoadedModel,
    policy: PromptPolicy,
    history: Messages,
    messages: Messages,
    max_tokens: int,
) -> tuple[list[int], int]:
    """Prompt tokens for ``history + messages`` with the policy's system prompt, and how many
    history messages were dropped to fit the context (the policy's ``history_trim`` rule).

    The request's own messages are never dropped: if they alone do not fit, 413.
    """
    system: Messages = []
    if policy.system_prompt and not any(m["role"] == "system" for m in history + messages):
        system = [{"role": "system", "content": policy.system_prompt}]
    limit = model.context_length or 0

    def too_long(prompt: list[int]) -> bool:
        return bool(limit) and len(prompt) + max_tokens > limit

    prompt = _template(model, system + history + messages)
    if too_long(prompt) and history and policy.history_trim == "error":
        raise RequestTooLargeError(
            f"The session history and request need {len(prompt) + max_tokens} tokens with "
            f"max_tokens; the model's context is {limit}",
            param="session_id",
        )
    trimmed = 0
    while too_long(prompt) and trimmed < len(history):
        trimmed += 1
        prompt = _template(model, system + history[trimmed:] + messages)
    check_fits(prompt, model, "messages")
    return prompt, trimmed


def check_fits(prompt: list[int], model: LoadedModel, param: str) -> None:
    """413 when the prompt alone fills the model's context."""
    limit = model.context_length
    if limit and len(prompt) >= limit:
        raise RequestTooLargeError(
            f"The prompt is {len(prompt)} tokens; the model's context is {limit} tokens",
            param=param,
        )


def request_messages(body_messages: list[ChatMessage]) -> Messages:
    """The request's messages as plain dicts (``developer`` is the system role to templates)."""
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body_messages
    ]
