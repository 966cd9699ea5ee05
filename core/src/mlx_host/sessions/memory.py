"""In-memory sessions: the development default (lost when the process ends)."""

from __future__ import annotations

import asyncio
import time

from mlx_host.sessions.store import (
    Message,
    Session,
    SessionStore,
    StoredResponse,
    new_session,
    not_found,
    response_not_found,
)


class MemorySessionStore(SessionStore):
    """Sessions in a dict, guarded by one lock."""

    def __init__(self, ttl_seconds: float) -> None:
        super().__init__(ttl_seconds)
        self._sessions: dict[str, Session] = {}
        self._history: dict[str, list[Message]] = {}
        # (service, id) -> (the response as JSON, when it expires)
        self._responses: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    def _live(self, service: str, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is not None and session.expires_at <= time.time():
            self._drop(session_id)
            session = None
        if session is None or session.service != service:
            raise not_found(session_id)
        return session

    def _drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._history.pop(session_id, None)

    def _touch(self, session: Session, **changes: object) -> Session:
        now = time.time()
        touched = session.model_copy(
            update={"updated_at": now, "expires_at": now + self.ttl, **changes}
        )
        self._sessions[session.id] = touched
        return touched

    async def _create(self, service: str, metadata: dict[str, str]) -> Session:
        session = new_session(service, metadata, self.ttl)
        async with self._lock:
            self._sessions[session.id] = session
            self._history[session.id] = []
        return session

    async def _get(self, service: str, session_id: str) -> Session:
        async with self._lock:
            return self._touch(self._live(service, session_id))

    async def _page(
        self, service: str, limit: int, after: str | None
    ) -> tuple[list[Session], bool]:
        async with self._lock:
            now = time.time()
            mine = [
                s for s in self._sessions.values() if s.service == service and s.expires_at > now
            ]
        mine.sort(key=lambda s: (s.created_at, s.id))
        if after is not None:
            ids = [s.id for s in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        return mine[:limit], len(mine) > limit

    async def _delete(self, service: str, session_id: str) -> None:
        async with self._lock:
            self._live(service, session_id)
            self._drop(session_id)

    async def _messages(self, service: str, session_id: str) -> list[Message]:
        async with self._lock:
            self._touch(self._live(service, session_id))
            return list(self._history[session_id])

    async def _append(self, service: str, session_id: str, messages: list[Message]) -> Session:
        async with self._lock:
            session = self._live(service, session_id)
            self._history[session_id].extend(messages)
            return self._touch(session, message_count=len(self._history[session_id]))

    async def _save_response(self, service: str, stored: StoredResponse) -> None:
        now = time.time()
        async with self._lock:
            # Every stored answer adds one: expired ones go here, not only when read again.
            for key in [k for k, (_, expires) in self._responses.items() if expires <= now]:
                del self._responses[key]
            self._responses[service, stored.id] = (stored.model_dump_json(), now + self.ttl)

    async def _load_response(self, service: str, response_id: str) -> StoredResponse:
        async with self._lock:
            found = self._responses.get((service, response_id))
            if found is None or found[1] <= time.time():
                self._responses.pop((service, response_id), None)
                raise response_not_found(response_id)
            self._responses[service, response_id] = (found[0], time.time() + self.ttl)
        return StoredResponse.model_validate_json(found[0])

    async def _delete_response(self, service: str, response_id: str) -> None:
        await self._load_response(service, response_id)  # 404 when gone
        async with self._lock:
            self._responses.pop((service, response_id), None)
