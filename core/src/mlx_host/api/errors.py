"""Every error leaves the server as OpenAI's error JSON, whatever raised it, and the OpenAPI
schema documents the error responses each endpoint can give.

Messages say what the caller can act on, never internals: exceptions that are not an
``MLXHostError`` are logged and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from mlx_host.errors import MLXHostError, error_body

logger = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
#: Validation errors that are not a bad value: a field this server does not know, or an
#: OpenAI field it does not implement.
_CODES = {"extra_forbidden": "unknown_parameter", "unsupported": "unsupported_parameter"}
_MESSAGES = {"extra_forbidden": "unknown parameter"}


class ErrorDetail(BaseModel):
    """What went wrong: a message for people, a type and code for programs, the field at fault."""

    message: str
    type: str
    param: str | None
    code: str | None
    details: list[Any] | None = Field(
        None, description="Only on 422: what the output lacked (e.g. schema violations)."
    )


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


_MEANING = {
    400: "Invalid request: a field is missing, of the wrong type, out of range, or not allowed",
    401: "Missing or unknown API key",
    403: "The key's service may not do this",
    404: "No such model, session or route",
    409: "The resource is busy",
    413: "Body or prompt too large",
    422: "The request was valid, but its output could not satisfy it (see details)",
    429: "Too many requests or a full queue (see Retry-After)",
    500: "Internal error (nothing about it is disclosed)",
    503: "Model or store unavailable, or memory exhausted (see Retry-After)",
}


def error_responses(
    *statuses: int, body: type[BaseModel] = ErrorResponse
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for routers: each status documented with the error ``body``."""
    return {s: {"model": body, "description": _MEANING[s]} for s in (*statuses, 500)}


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
    body = error_body(message, error_type, code=code, param=param)
    return JSONResponse(body, status_code=status, headers=headers)


async def _host_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MLXHostError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """Invalid bodies and parameters are 400, as OpenAI answers them, naming the field."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            400, "The request body is not valid JSON", "invalid_request_error",
            code="invalid_json",
        )  # fmt: skip

    def location(error: dict) -> str:
        return ".".join(str(p) for p in error.get("loc", ()) if not _is_wrapper(p))

    # A value that matches no member of a union fails once per member; the deepest failure
    # is the one that names what is wrong (a field inside a list, not "not a string").
    errors = sorted(errors, key=lambda e: -len(location(e).split(".")))
    where = location(errors[0]) if errors else ""
    message = "; ".join(f"{location(e) or 'body'}: {_MESSAGES.get(e['type'], e['msg'])}"
                        for e in errors)  # fmt: skip
    code = _CODES.get(errors[0].get("type", "") if errors else "", "invalid_value")
    return error_response(
        400, message or "Invalid request", "invalid_request_error",
        code=code, param=where or None,
    )  # fmt: skip


def _is_wrapper(part: object) -> bool:
    """Whether a part of a validation error's location names where the value came from
    (body, query) or which member of a union was tried (``str``, ``list[ContentPart]``),
    rather than a field or an index."""
    if part in ("body", "query", "path"):
        return True
    return isinstance(part, str) and ("[" in part or part in _UNION_MEMBERS)


_UNION_MEMBERS = {"str", "int", "float", "bool", "list", "dict", "none"}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_type = _TYPES.get(exc.status_code, "invalid_request_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), error_type, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    # Starlette answers this outside the access middleware, which cannot add its header.
    record = request.scope.get("state", {}).get("record")
    headers = {"x-request-id": record.request_id} if record is not None else None
    return error_response(500, "The server had an internal error", "server_error", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of exception to an OpenAI-shaped response, and document them."""
    app.add_exception_handler(MLXHostError, _host_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with its 422 validation answers replaced by our 400."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": _MEANING[400],
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/ErrorResponse"}}},
                        }  # fmt: skip
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
