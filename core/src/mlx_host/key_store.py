"""API keys made with ``mlx-host keys create``: only their hashes are stored, in a file by
default or in Redis when sessions are (so every host sees the same keys). A server reads the
store for each key it does not know yet, so keys work without a restart and revoked ones fail
at once: the file's changes are seen by its modification time, Redis is asked every time."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel, Field
from redis import asyncio as aioredis

from mlx_host.keys import generate_key, hash_key, mask

#: How often a key's last use is written back (each request would be a write otherwise).
LAST_USED_EVERY_SECONDS = 60.0


class StoredKey(BaseModel):
    """A key's record: never the key, only its hash and what an operator needs to manage it."""

    id: str = Field(description="What `keys revoke` takes.")
    service: str
    name: str = ""
    hint: str = Field(description="The key's prefix, to tell keys apart; nothing secret.")
    key_hash: str
    created_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class KeyStore(ABC):
    """Where created keys' records live."""

    @abstractmethod
    async def add(self, record: StoredKey) -> None:
        """Store a new record."""

    @abstractmethod
    async def find(self, key_hash: str) -> StoredKey | None:
        """The record of the key with ``key_hash``, if any (revoked ones included)."""

    @abstractmethod
    async def all(self) -> list[StoredKey]:
        """Every record, oldest first."""

    @abstractmethod
    async def update(self, record: StoredKey) -> None:
        """Replace a stored record (a revocation)."""

    @abstractmethod
    async def touch(self, key_hash: str, when: float) -> None:
        """Record a key's last use (and nothing else: a revocation made meanwhile stays)."""

    async def revoke(self, key_id: str) -> StoredKey | None:
        """Revoke the key ``key_id`` (None: no such key)."""
        record = next((r for r in await self.all() if r.id == key_id), None)
        if record is not None and record.revoked_at is None:
            record.revoked_at = time.time()
            await self.update(record)
        return record

    async def close(self) -> None:  # noqa: B027 (stores with connections override it)
        """Release connections."""


async def create_key(
    store: KeyStore, service: str, prefix: str, name: str = "", expires_in: float | None = None
) -> tuple[str, StoredKey]:
    """A new key for ``service`` and its stored record (the key itself is returned once, never
    stored)."""
    key = generate_key(prefix)
    now = time.time()
    record = StoredKey(
        id=f"key_{secrets.token_hex(6)}", service=service, name=name, hint=mask(key),
        key_hash=hash_key(key), created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )  # fmt: skip
    await store.add(record)
    return key, record


class FileKeyStore(KeyStore):
    """Records in a JSON file (written atomically, readable by its owner only), re-read when
    it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of what _records holds
        self._records: dict[str, StoredKey] = {}

    def _load(self) -> dict[str, StoredKey]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._records = None, {}
            return self._records
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            data = json.loads(self.path.read_text() or "{}")
            self._records = {
                r["key_hash"]: StoredKey.model_validate(r) for r in data.get("keys", [])
            }
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return self._records

    def _save(self, records: dict[str, StoredKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [r.model_dump() for r in records.values()]}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        with os.fdopen(fd, "w") as f:  # mkstemp's file is the owner's only (0600)
            f.write(body)
        os.replace(tmp, self.path)
        self._seen = None  # read back on next use: another process may write too

    async def add(self, record: StoredKey) -> None:
        """Store a new record."""
        with self._lock:
            records = dict(self._load())
            records[record.key_hash] = record
            self._save(records)

    async def find(self, key_hash: str) -> StoredKey | None:
        """The record with ``key_hash`` (a stat of the file, a read only when it changed)."""
        with self._lock:
            return self._load().get(key_hash)

    async def all(self) -> list[StoredKey]:
        """Every record, oldest first."""
        with self._lock:
            return sorted(self._load().values(), key=lambda r: r.created_at)

    async def update(self, record: StoredKey) -> None:
        """Replace a stored record."""
        with self._lock:
            records = dict(self._load())
            records[record.key_hash] = record
            self._save(records)

    async def touch(self, key_hash: str, when: float) -> None:
        """Record a key's last use in its current record."""
        with self._lock:
            records = dict(self._load())
            if key_hash in records:
                records[key_hash] = records[key_hash].model_copy(update={"last_used_at": when})
                self._save(records)


class RedisKeyStore(KeyStore):
    """Records in one Redis hash (key hash to record), shared by every host on that Redis."""

    def __init__(self, url: str, namespace: str = "mlx-host") -> None:
        self._redis = aioredis.from_url(url, decode_responses=True)
        self._hash = f"{namespace}:api-keys"
        self._used = f"{namespace}:api-keys-last-used"  # apart: a touch never undoes a revoke

    async def add(self, record: StoredKey) -> None:
        """Store a new record."""
        await self._redis.hset(self._hash, record.key_hash, record.model_dump_json())

    async def find(self, key_hash: str) -> StoredKey | None:
        """The record with ``key_hash``."""
        raw = await self._redis.hget(self._hash, key_hash)
        return StoredKey.model_validate_json(raw) if raw else None

    async def all(self) -> list[StoredKey]:
        """Every record, oldest first."""
        raw = await self._redis.hgetall(self._hash)
        used = await self._redis.hgetall(self._used)
        records = [StoredKey.model_validate_json(v) for v in raw.values()]
        for r in records:
            if r.key_hash in used:
                r.last_used_at = float(used[r.key_hash])
        return sorted(records, key=lambda r: r.created_at)

    async def touch(self, key_hash: str, when: float) -> None:
        """Record a key's last use."""
        await self._redis.hset(self._used, key_hash, str(when))

    async def update(self, record: StoredKey) -> None:
        """Replace a stored record."""
        await self._redis.hset(self._hash, record.key_hash, record.model_dump_json())

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def open_key_store(backend: str, keys_file: Path, redis_url: str) -> KeyStore:
    """Redis when sessions are there (``backend`` redis), else the file."""
    return RedisKeyStore(redis_url) if backend == "redis" else FileKeyStore(keys_file)


class LastUse:
    """Writes a key's last use back to its store at most every ``LAST_USED_EVERY_SECONDS``."""

    def __init__(self) -> None:
        self._written: dict[str, float] = {}

    async def note(self, store: KeyStore, key_hash: str, now: float) -> None:
        """Record that the key with ``key_hash`` was just used."""
        if now - self._written.get(key_hash, 0.0) < LAST_USED_EVERY_SECONDS:
            return
        self._written[key_hash] = now
        await asyncio.shield(store.touch(key_hash, now))
