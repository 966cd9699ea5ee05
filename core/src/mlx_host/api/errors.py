"""Every error leaves the server as OpenAI's error JSON, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mlx_host.errors import MLXHostError

logger = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error response."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _host_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MLXHostError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            422, "The request body is not valid JSON", "invalid_request_error",
            code="invalid_json",
        )  # fmt: skip

    def location(error: dict) -> str:
        return ".".join(str(p) for p in error.get("loc", ()) if p != "body")

    where = location(errors[0]) if errors else ""
    message = "; ".join(f"{location(e) or 'body'}: {e['msg']}" for e in errors)
    return error_response(
        422, message or "Invalid request body", "invalid_request_error",
        code="invalid_request", param=where or None,
    )  # fmt: skip


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_type = _TYPES.get(exc.status_code, "invalid_request_error")
    return error_response(exc.status_code, str(exc.detail), error_type, headers=exc.headers)


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "The server had an internal error", "server_error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of exception to an OpenAI-shaped response."""
    app.add_exception_handler(MLXHostError, _host_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
