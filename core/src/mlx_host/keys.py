"""API keys: generated, hashed at rest, resolved to the service whose prefix they carry."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from mlx_host.errors import PluginError


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
    """Hashes of the accepted keys, each mapped to its service's name."""

    def __init__(self, prefixes: dict[str, str]) -> None:
        self._prefixes = prefixes  # key prefix -> service name
        self._services: dict[str, str] = {}  # key hash -> service name

    def add(self, key: str) -> str:
        """Accept ``key``; returns its service. A key matching no service stops the start."""
        service = self.service_for_prefix(key)
        if service is None:
            raise PluginError(f"API key {mask(key)} matches no installed service's prefix")
        self._services[hash_key(key)] = service
        return service

    def add_all(self, keys: Iterable[str]) -> None:
        """Accept every key in ``keys``."""
        for key in keys:
            self.add(key)

    def service_for_prefix(self, key: str) -> str | None:
        """The service whose prefix ``key`` starts with (prefixes never overlap)."""
        return next((s for p, s in self._prefixes.items() if key.startswith(p)), None)

    def lookup(self, key: str) -> str | None:
        """The service of an accepted key, or None."""
        return self._services.get(hash_key(key))

    def __len__(self) -> int:
        return len(self._services)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, for the single admin key."""
    return hmac.compare_digest(given.encode(), expected.encode())
