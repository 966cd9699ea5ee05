"""Reject request bodies over the configured size before they are read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_host.api.errors import error_response

#: Room for the multipart envelope and form fields around an upload.
MULTIPART_ROOM = 64 * 1024


class BodyLimitMiddleware:
    """413 for bodies larger than their limit, by ``Content-Length`` or by counting: file
    uploads (multipart forms) may be ``upload_bytes``, other bodies ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        upload = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = self.upload_bytes + MULTIPART_ROOM if upload else self.max_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(scope, receive, send, upload)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send, upload)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, upload: bool) -> None:
        limit, setting = (
            (self.upload_bytes, "MLX_HOST_MAX_AUDIO_BYTES")
            if upload
            else (self.max_bytes, "MLX_HOST_MAX_REQUEST_BYTES")
        )
        response = error_response(
            413,
            f"The {'upload' if upload else 'request body'} is larger than {limit} bytes "
            f"({setting})",
            "invalid_request_error",
            code="request_too_large",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
