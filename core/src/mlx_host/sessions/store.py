"""The session store interface, its data, and the choice of backend from settings.

The store keeps sessions and the Responses API's stored responses. Every method takes the
caller's service: a session or response is only ever visible to the service that created it,
and any other service gets 404, exactly as for one that does not exist.
"""

from __future__ import annotations

import re
import secrets
import time
from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlx_host.errors import NotFoundError

Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(BaseModel):
    """One stored message."""

    role: Role
    content: str
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="An assistant message's tool calls, as OpenAI shapes them."
    )
    tool_call_id: str | None = Field(None, description="A tool message's call.")
    created_at: float = Field(default_factory=time.time)

    def chat_message(self) -> dict[str, Any]:
        """The message as a chat request's history holds it."""
        return self.model_dump(
            include={"role", "content", "tool_calls", "tool_call_id"}, exclude_none=True
        )


class StoredResponse(BaseModel):
    """An answer of the Responses API kept for ``GET`` and for continuing it: the response
    object as it was sent, and the conversation through it (what a request naming it as
    ``previous_response_id`` starts from)."""

    id: str
    response: dict[str, Any]
    messages: list[Message]


class Session(BaseModel):
    """A conversation's record (its messages are read separately)."""

    id: str
    object: Literal["session"] = "session"
    service: str
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: float
    updated_at: float
    expires_at: float
    message_count: int = 0


#: The ids this server issues; any other id is unknown, and never reaches a backend's keys.
SESSION_ID = re.compile(r"sess_[A-Za-z0-9_-]{24}")


#: The stored response ids this server issues (``resp_`` and 24 random characters).
RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{24}")


def new_response_id() -> str:
    """A random, unguessable response id."""
    return f"resp_{secrets.token_urlsafe(18)}"


def new_session(service: str, metadata: dict[str, str], ttl: float) -> Session:
    """A fresh session record with a random, unguessable id."""
    now = time.time()
    return Session(
        id=f"sess_{secrets.token_urlsafe(18)}",
        service=service,
        metadata=metadata,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
    )


def not_found(session_id: str) -> NotFoundError:
    """The one error for a session that is missing, expired or another service's."""
    return NotFoundError(f"No session {session_id!r}", param="session_id", code="session_not_found")


def response_not_found(response_id: str) -> NotFoundError:
    """The one error for a stored response that is missing, expired or another service's."""
    return NotFoundError(f"No response {response_id[:64]!r}", code="response_not_found")


def _known_form(session_id: str) -> str:
    """``session_id`` if it has the form this server issues; else 404, before any storage
    sees it (so ``<id>:messages`` and the like cannot address another key)."""
    if not SESSION_ID.fullmatch(session_id):
        raise not_found(session_id[:64])
    return session_id


class SessionStore(ABC):
    """Sessions with a sliding TTL: every read or write of a session extends it.

    The public methods check ids; backends implement the underscored ones.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds

    async def create(self, service: str, metadata: dict[str, str]) -> Session:
        """Create an empty session owned by ``service``."""
        return await self._create(service, metadata)

    async def get(self, service: str, session_id: str) -> Session:
        """The session, or 404 when missing, expired or owned by another service."""
        return await self._get(service, _known_form(session_id))

    async def page(
        self, service: str, limit: int, after: str | None = None
    ) -> tuple[list[Session], bool]:
        """``service``'s sessions, oldest first, after the session ``after``; and whether more
        follow (none after an unknown ``after``)."""
        if after is not None and not SESSION_ID.fullmatch(after):
            return [], False
        return await self._page(service, limit, after)

    async def delete(self, service: str, session_id: str) -> None:
        """Remove the session and its messages (404 as for ``get``)."""
        await self._delete(service, _known_form(session_id))

    async def messages(self, service: str, session_id: str) -> list[Message]:
        """The session's messages, oldest first (404 as for ``get``)."""
        return await self._messages(service, _known_form(session_id))

    async def append(self, service: str, session_id: str, messages: list[Message]) -> Session:
        """Append ``messages`` in one atomic step: concurrent appends never interleave."""
        return await self._append(service, _known_form(session_id), messages)

    async def save_response(self, service: str, stored: StoredResponse) -> None:
        """Keep ``stored`` for ``service`` (as long as a session: every read extends it)."""
        if not RESPONSE_ID.fullmatch(stored.id):
            raise ValueError(f"not a response id this server issues: {stored.id!r}")
        await self._save_response(service, stored)

    async def load_response(self, service: str, response_id: str) -> StoredResponse:
        """A stored response; 404 when missing, expired or another service's."""
        if not RESPONSE_ID.fullmatch(response_id):
            raise response_not_found(response_id)
        return await self._load_response(service, response_id)

    async def delete_response(self, service: str, response_id: str) -> None:
        """Forget a stored response (404 as for ``load_response``)."""
        if not RESPONSE_ID.fullmatch(response_id):
            raise response_not_found(response_id)
        await self._delete_response(service, response_id)

    async def close(self) -> None:  # noqa: B027 (optional for backends)
        """Release connections."""

    @abstractmethod
    async def _create(self, service: str, metadata: dict[str, str]) -> Session: ...

    @abstractmethod
    async def _get(self, service: str, session_id: str) -> Session: ...

    @abstractmethod
    async def _page(
        self, service: str, limit: int, after: str | None
    ) -> tuple[list[Session], bool]: ...

    @abstractmethod
    async def _delete(self, service: str, session_id: str) -> None: ...

    @abstractmethod
    async def _messages(self, service: str, session_id: str) -> list[Message]: ...

    @abstractmethod
    async def _append(self, service: str, session_id: str, messages: list[Message]) -> Session: ...

    @abstractmethod
    async def _save_response(self, service: str, stored: StoredResponse) -> None: ...

    @abstractmethod
    async def _load_response(self, service: str, response_id: str) -> StoredResponse: ...

    @abstractmethod
    async def _delete_response(self, service: str, response_id: str) -> None: ...


def open_store(backend: str, ttl_seconds: float, redis_url: str, **options: Any) -> SessionStore:
    """The backend named in settings."""
    if backend == "redis":
        from mlx_host.sessions.redis import RedisSessionStore

        return RedisSessionStore(redis_url, ttl_seconds, **options)
    from mlx_host.sessions.memory import MemorySessionStore

    return MemorySessionStore(ttl_seconds)
