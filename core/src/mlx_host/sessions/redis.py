"""Sessions and stored responses in Redis: shared by every host on the same Redis, and kept
across restarts.

Keys carry the owning service (``mlx-host:session:<service>:<id>``,
``mlx-host:response:<service>:<id>``), so a lookup by another
service finds nothing. Appends run as one Lua script, atomic on the server.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mlx_host.errors import ServiceUnavailableError
from mlx_host.sessions.store import (
    Message,
    Session,
    SessionStore,
    StoredResponse,
    new_session,
    not_found,
    response_not_found,
)

logger = logging.getLogger(__name__)

_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local n = redis.call('LLEN', KEYS[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2], 'message_count', n)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return n
"""

_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


@contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        logger.warning("the session store is unavailable: %s", exc)  # names the address
        raise ServiceUnavailableError(
            "The session store is unavailable; retry shortly",
            code="session_store_unavailable",
            headers={"Retry-After": "5"},
        ) from exc


class RedisSessionStore(SessionStore):
    """Sessions as a hash plus a message list per session and a creation index per service."""

    def __init__(self, url: str, ttl_seconds: float, namespace: str = "mlx-host") -> None:
        super().__init__(ttl_seconds)
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        self._ns = namespace
        self._append_script = self._redis.register_script(_APPEND)
        self._touch_script = self._redis.register_script(_TOUCH)

    def _keys(self, service: str, session_id: str) -> tuple[str, str]:
        base = f"{self._ns}:session:{service}:{session_id}"
        return base, f"{base}:messages"

    def _response_key(self, service: str, response_id: str) -> str:
        return f"{self._ns}:response:{service}:{response_id}"

    def _index(self, service: str) -> str:
        return f"{self._ns}:sessions:{service}"

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def _session(self, fields: dict[str, Any]) -> Session:
        updated = float(fields["updated_at"])
        return Session(
            id=fields["id"],
            service=fields["service"],
            metadata=json.loads(fields["metadata"]),
            created_at=float(fields["created_at"]),
            updated_at=updated,
            expires_at=updated + self.ttl,
            message_count=int(fields.get("message_count", 0)),
        )

    async def _touch(self, service: str, session_id: str) -> Session:
        meta, msgs = self._keys(service, session_id)
        fields = await self._touch_script(keys=[meta, msgs], args=[self._ttl_ms, time.time()])
        if not fields:
            raise not_found(session_id)
        return self._session(dict(zip(fields[::2], fields[1::2], strict=True)))

    async def _create(self, service: str, metadata: dict[str, str]) -> Session:
        session = new_session(service, metadata, self.ttl)
        meta, _ = self._keys(service, session.id)
        fields = {
            "id": session.id,
            "service": service,
            "metadata": json.dumps(metadata),
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "message_count": 0,
        }
        with _available():
            async with self._redis.pipeline(transaction=True) as pipe:
                # redis-py types the mapping's keys invariantly, as bytes | str | int | float.
                pipe.hset(meta, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(meta, self._ttl_ms)
                pipe.zadd(self._index(service), {session.id: session.created_at})
                await pipe.execute()
        return session

    async def _get(self, service: str, session_id: str) -> Session:
        with _available():
            return await self._touch(service, session_id)

    async def _page(
        self, service: str, limit: int, after: str | None
    ) -> tuple[list[Session], bool]:
        index = self._index(service)
        with _available():
            start = 0
            if after is not None:
                rank = cast(int | None, await self._redis.zrank(index, after))
                if rank is None:
                    return [], False
                start = rank + 1
            found: list[Session] = []
            while len(found) <= limit:
                ids = cast(list[str], await self._redis.zrange(index, start, start + limit))
                if not ids:
                    break
                start += len(ids)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for session_id in ids:
                        pipe.hgetall(self._keys(service, session_id)[0])
                    rows = await pipe.execute()
                expired = [i for i, row in zip(ids, rows, strict=True) if not row]
                found += [self._session(row) for row in rows if row]
                if expired:
                    await self._redis.zrem(index, *expired)
                    start -= len(expired)
        return found[:limit], len(found) > limit

    async def _delete(self, service: str, session_id: str) -> None:
        meta, msgs = self._keys(service, session_id)
        with _available():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(meta, msgs)
                pipe.zrem(self._index(service), session_id)
                removed, _ = await pipe.execute()
        if not removed:
            raise not_found(session_id)

    async def _messages(self, service: str, session_id: str) -> list[Message]:
        with _available():
            await self._touch(service, session_id)
            rows = await self._redis.lrange(self._keys(service, session_id)[1], 0, -1)
        return [Message.model_validate_json(row) for row in rows]

    async def _append(self, service: str, session_id: str, messages: list[Message]) -> Session:
        meta, msgs = self._keys(service, session_id)
        payload = [m.model_dump_json() for m in messages]
        with _available():
            count = await self._append_script(
                keys=[meta, msgs], args=[self._ttl_ms, time.time(), *payload]
            )
            if count < 0:
                raise not_found(session_id)
            return self._session(cast(dict[str, str], await self._redis.hgetall(meta)))

    async def _save_response(self, service: str, stored: StoredResponse) -> None:
        key = self._response_key(service, stored.id)
        with _available():
            await self._redis.set(key, stored.model_dump_json(), px=self._ttl_ms)

    async def _load_response(self, service: str, response_id: str) -> StoredResponse:
        with _available():
            raw = await self._redis.getex(self._response_key(service, response_id), px=self._ttl_ms)
        if raw is None:
            raise response_not_found(response_id)
        return StoredResponse.model_validate_json(raw)

    async def _delete_response(self, service: str, response_id: str) -> None:
        with _available():
            removed = await self._redis.delete(self._response_key(service, response_id))
        if not removed:
            raise response_not_found(response_id)

    async def close(self) -> None:
        await self._redis.aclose()
