"""API keys: generated, hashed at rest, resolved to the service whose prefix they carry; from
settings, or from the key store (``mlx_host.key_store``) for keys made with ``keys create``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mlx_host.errors import PluginError, ServiceUnavailableError

if TYPE_CHECKING:
    from mlx_host.key_store import KeyStore

logger = logging.getLogger(__name__)

#: The shortest secret part (after the prefix) a configured key may have: a guessable key is
#: no key. Generated keys have 32 characters.
MIN_SECRET_CHARS = 16


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are long random strings, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(prefix: str) -> str:
    """A new random key for the service with ``prefix``."""
    return f"{prefix}{secrets.token_urlsafe(24)}"


def mask(key: str) -> str:
    """A form of a key that is safe to print: its prefix and nothing secret."""
    prefix, sep, _ = key.partition("_")
    return f"{prefix}{sep}…" if sep else "…"


class KeyRing:
    """Hashes of the accepted keys, each mapped to its service's name: the configured ones,
    and those of the key store, read as they are used."""

    def __init__(self, prefixes: dict[str, str], store: KeyStore | None = None) -> None:
        from mlx_host.key_store import LastUse

        self._prefixes = prefixes  # key prefix -> service name
        self._services: dict[str, str] = {}  # key hash -> service name
        self._store = store
        self._last_use = LastUse()

    def add(self, key: str) -> str:
        """Accept ``key``; returns its service. A key matching no service, or too short to be
        safe, stops the start."""
        service = self.service_for_prefix(key)
        if service is None:
            raise PluginError(f"API key {mask(key)} matches no installed service's prefix")
        prefix = next(p for p, s in self._prefixes.items() if key.startswith(p))
        if len(key) - len(prefix) < MIN_SECRET_CHARS:
            raise PluginError(
                f"API key {mask(key)} is too short: at least {MIN_SECRET_CHARS} characters after "
                f"its prefix (`mlx-host keys create` makes safe ones)"
            )
        self._services[hash_key(key)] = service
        return service

    def add_all(self, keys: Iterable[str]) -> None:
        """Accept every key in ``keys``."""
        for key in keys:
            self.add(key)

    def service_for_prefix(self, key: str) -> str | None:
        """The service whose prefix ``key`` starts with (prefixes never overlap)."""
        return next((s for p, s in self._prefixes.items() if key.startswith(p)), None)

    async def lookup(self, key: str) -> str | None:
        """The service of an accepted key, or None: a configured key, or a stored one that is
        neither revoked nor expired (asked of the store each time: revocations hold at once).
        503 when the store cannot be read."""
        key_hash = hash_key(key)
        if (service := self._services.get(key_hash)) is not None:
            return service
        if self._store is None or self.service_for_prefix(key) is None:
            return None
        try:
            record = await self._store.find(key_hash)
            now = time.time()
            if record is None or not record.usable(now) or record.service not in self.services:
                return None
            await self._last_use.note(self._store, key_hash, now)
        except Exception as exc:  # Redis down, a file being edited by hand: this request's 503
            logger.warning("the key store cannot be read: %s", type(exc).__name__)
            raise ServiceUnavailableError(
                "The key store is unavailable; retry shortly",
                code="key_store_unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        return record.service

    @property
    def services(self) -> set[str]:
        """The services keys may belong to."""
        return set(self._prefixes.values())

    async def close(self) -> None:
        """Release the key store's connections."""
        if self._store is not None:
            await self._store.close()

    def __len__(self) -> int:
        return len(self._services)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, for the single admin key."""
    return hmac.compare_digest(given.encode(), expected.encode())
