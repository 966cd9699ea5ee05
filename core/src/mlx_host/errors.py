"""The one exception hierarchy of mlx-host: each error carries its HTTP status and OpenAI type.

Raise these anywhere (core or plugin); the app turns them into OpenAI's error JSON,
``{"error": {"message", "type", "param", "code"}}``, with the status they carry.
"""

from __future__ import annotations

from typing import Any


class MLXHostError(Exception):
    """Base class: an error a caller may see, with the status and OpenAI type to send."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, Any]]:
        """The OpenAI-shaped JSON body for this error."""
        return error_body(self.message, self.error_type, code=self.code, param=self.param)


def error_body(
    message: str, error_type: str, *, code: str | None = None, param: str | None = None
) -> dict[str, dict[str, Any]]:
    """OpenAI's error JSON: the one shape every error of mlx-host leaves in."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class InvalidRequestError(MLXHostError):
    """The request is well-formed JSON but asks for something impossible (400)."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(MLXHostError):
    """No API key, or one the server does not know (401)."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(MLXHostError):
    """A known key asks for something its service may not use (403)."""

    status_code = 403
    error_type = "permission_error"


class NotFoundError(MLXHostError):
    """An unknown model, session or route (404)."""

    status_code = 404
    error_type = "not_found_error"


class ConflictError(MLXHostError):
    """The resource is in a state that forbids the change, e.g. unloading a busy model (409)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class RequestTooLargeError(MLXHostError):
    """A body or prompt over the configured limits (413)."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UnprocessableError(MLXHostError):
    """The request was valid, but what it asked for could not be produced: an extraction
    whose answer does not satisfy its schema (422). ``details`` (JSON-ready) are sent in
    the error object beside the message."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "unprocessable"

    def __init__(self, message: str, *, details: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.details = details or []

    def body(self) -> dict[str, dict[str, Any]]:
        """OpenAI's error body, with ``details``."""
        body = super().body()
        body["error"]["details"] = self.details
        return body


class RateLimitError(MLXHostError):
    """Too many requests, or a full queue; carries ``Retry-After`` (429)."""

    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailableError(MLXHostError):
    """The model cannot be loaded or served right now (503)."""

    status_code = 503
    error_type = "server_error"
    code = "model_unavailable"


class GenerationError(MLXHostError):
    """The model failed while working on this request; other requests are unaffected (500)."""

    code = "generation_failed"

    def __init__(
        self,
        message: str = "The model failed while generating this answer; retry the request",
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class ModelLoadError(ServiceUnavailableError):
    """A model's source could not be read, converted or loaded (503 for that model only)."""

    code = "model_load_failed"


class ModelFilesMissingError(ModelLoadError):
    """A model's directory lacks files it needs (503); the message names them, never the
    server's paths, so it reaches the caller as it is."""

    code = "model_files_missing"


class ClientDisconnectedError(MLXHostError):
    """The client left before its answer was ready (499, as nginx logs it; nobody reads it)."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class PluginError(Exception):
    """A plugin or service definition that stops the server from starting (never sent to users)."""
