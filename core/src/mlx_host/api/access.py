"""What each request did, recorded once: a request id (the caller's ``x-request-id``, or a new
one, echoed in the response), one structured access line when the response has been sent, and
the request metrics (``mlx_host.metrics``).

The access line names the request id, method, route (never the query string: a key sent as
``?api_key=`` must not reach a log), status, service, model, tokens and latency; never a key,
a prompt, an answer or audio. Routers add what they learn to the request's ``RequestRecord``
(``record_of(request)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, field

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_host.metrics import Metrics
from mlx_host.rate_limits import LimitState, RateLimiter

logger = logging.getLogger("mlx_host.access")

#: Request ids a caller may choose: short, and nothing a log line could be forged with.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class RequestRecord:
    """One request's facts, filled in as it is served."""

    request_id: str
    method: str
    route: str = "unmatched"
    status: int = 0
    service: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_ms: float = 0.0
    first_token_ms: float | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)
    limits: LimitState | None = field(default=None, repr=False)  # its service's, once known

    def first_token(self) -> None:
        """Mark now as the moment the first generated text was ready."""
        if self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.started) * 1000

    def usage(self, prompt_tokens: int, completion_tokens: int = 0) -> None:
        """The tokens the request read and wrote."""
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens

    def line(self) -> str:
        """The access line: the record as JSON, without its clock."""
        fields = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("started", "limits") and v is not None
        }
        return json.dumps(fields, separators=(",", ":"))


def record_of(request: Request) -> RequestRecord:
    """The record of ``request`` (a blank one outside the middleware, as in unit tests)."""
    record = request.scope.setdefault("state", {}).get("record")
    if record is None:
        record = RequestRecord(request_id="none", method=request.method)
        request.scope["state"]["record"] = record
    return record


class AccessMiddleware:
    """Gives each HTTP request a record and an id, echoes the id, and when the response has
    been sent (a stream included) writes the access line and the metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, limiter: RateLimiter) -> None:
        self.app = app
        self.metrics = metrics
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else f"req_{secrets.token_hex(12)}"
        record = RequestRecord(request_id=request_id, method=scope["method"])
        scope.setdefault("state", {})["record"] = record

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if record.limits is not None and record.status != 429:  # a 429 has its own
                    headers += [(k.encode(), v.encode()) for k, v in record.limits.headers.items()]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            record.status = record.status or 499  # the client left (nginx's code for it)
            raise
        except Exception:
            record.status = record.status or 500  # answered by the server-error handler
            raise
        finally:
            record.route = _route_of(scope) or record.route
            record.duration_ms = (time.perf_counter() - record.started) * 1000
            record.status = record.status or 499
            logger.info("%s", record.line())
            self.metrics.observe(record)
            if record.limits is not None and record.service is not None:
                self.limiter.release(record.service, record.limits)
                tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
                with contextlib.suppress(Exception):  # a store that fails costs a count only
                    await self.limiter.charge(record.service, tokens)


def _route_of(scope: Scope) -> str | None:
    """The path template of the route that served the request (``/v1/models/{model_id}``,
    never the ids in it), with its API prefix; None when no route matched."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return None
    path = scope["path"]
    for prefix in ("/api/v1", "/v1"):
        if path.startswith(prefix + "/") and not template.startswith(prefix + "/"):
            return prefix + template
    return str(template)
