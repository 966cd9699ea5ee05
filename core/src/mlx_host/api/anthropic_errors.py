"""Errors of the Messages API in Anthropic's shape.

Every error is raised and answered as everywhere else (``errors.py``, OpenAI's JSON); on
the Messages API's paths this middleware rewrites the body into Anthropic's
``{"type": "error", "error": {"type", "message"}}`` with the same status, so that one error
path serves both APIs. It also answers errors no handler took (a 500 that says nothing of
what failed) and sends the request id as Anthropic's SDKs read it (``request-id``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


class AnthropicErrorDetail(BaseModel):
    """What went wrong: a type for programs, a message for people."""

    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    """Anthropic's error body."""

    type: Literal["error"]
    error: AnthropicErrorDetail


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body for an error with ``status``."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicErrorMiddleware:
    """On ``paths``, rewrites OpenAI-shaped JSON error bodies into Anthropic's."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        record = scope.get("state", {}).get("record")
        request_id = [(b"request-id", record.request_id.encode())] if record else []
        held: Message | None = None  # an error's start, sent once its body is rewritten
        body = b""
        started = False

        async def reshape(message: Message) -> None:
            nonlocal held, body, started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), *request_id]
                message = {**message, "headers": headers}
                if message["status"] >= 400 and (b"content-type", b"application/json") in headers:
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                body += message.get("body", b"")
                if message.get("more_body"):
                    return
                await self._send_error(send, held, _message_of(body))
                return
            await send(message)

        try:
            await self.app(scope, receive, reshape)
        except Exception:
            if started:
                raise
            logger.exception("unhandled error")
            start = {"type": "http.response.start", "status": 500, "headers": request_id}
            await self._send_error(send, start, "The server had an internal error")

    @staticmethod
    async def _send_error(send: Send, start: Message, message: str) -> None:
        content = json.dumps(anthropic_error_body(start["status"], message)).encode()
        replaced = (b"content-length", b"content-type")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in replaced]
        headers += [(b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json")]  # fmt: skip
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _message_of(body: bytes) -> str:
    """The message of an OpenAI-shaped error body."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return "The request failed"
