"""Limits per service: requests and tokens per minute (in Redis when sessions are, so that
every host counts together; in memory otherwise) and concurrent requests (per host).

Defaults come from each service's policy (``ServiceLimits``), overrides from settings
(``MLX_HOST_SERVICE_LIMITS``). A request over a limit is a 429 with ``Retry-After``; every
response of a limited service carries OpenAI's ``x-ratelimit-*`` headers. Tokens are counted
when an answer is done (what it read and wrote): a service whose minute is spent is refused
until the window moves on.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from mlx_host.errors import RateLimitError
from mlx_host.services import ServiceLimits

logger = logging.getLogger(__name__)


@dataclass
class LimitState:
    """What a request learnt of its service's limits, for its response headers."""

    headers: dict[str, str]
    concurrent: bool = False  # it holds one of the service's concurrency slots


class RateLimiter:
    """The limits of every service, and their counters."""

    def __init__(
        self, limits: dict[str, ServiceLimits], backend: str, redis_url: str, namespace: str
    ) -> None:
        self._limits = limits
        storage: Storage
        if backend == "redis":
            storage = RedisStorage(
                f"async+{redis_url}",  # limits' scheme for asyncio (redis:// and rediss://)
                implementation="redispy",
                key_prefix=f"{namespace}:limits",
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._window = MovingWindowRateLimiter(storage)
        self._running: Counter[str] = Counter()

    def limits_of(self, service: str) -> ServiceLimits:
        """The service's limits (none set: unlimited)."""
        return self._limits.get(service, ServiceLimits())

    async def admit(self, service: str) -> LimitState:
        """Count a new request of ``service`` in, or refuse it with 429 naming the limit.
        When the counters cannot be read (Redis down), requests go through: an outage of the
        store must not become an outage of every service (it is logged)."""
        limits = self.limits_of(service)
        try:
            headers = await self._check_windows(service, limits)
        except RateLimitError:
            raise
        except Exception as exc:
            logger.warning("rate limits unavailable (%s): not enforced", type(exc).__name__)
            headers = {}
        state = LimitState(headers)
        if limits.concurrent_requests:
            if self._running[service] >= limits.concurrent_requests:
                raise RateLimitError(
                    f"The {service!r} service has {limits.concurrent_requests} requests running, "
                    "its limit; retry shortly",
                    code="concurrency_limit_exceeded",
                    headers={**headers, "retry-after": "1"},
                )
            self._running[service] += 1
            state.concurrent = True
        return state

    async def _check_windows(self, service: str, limits: ServiceLimits) -> dict[str, str]:
        headers: dict[str, str] = {}
        if limits.requests_per_minute:
            item = RateLimitItemPerMinute(limits.requests_per_minute)
            allowed = await self._window.hit(item, service, "requests")
            headers |= await self._headers(item, service, "requests")
            if not allowed:
                raise self._refused(service, "requests per minute", headers, "requests")
        if limits.tokens_per_minute:
            item = RateLimitItemPerMinute(limits.tokens_per_minute)
            headers |= await self._headers(item, service, "tokens")
            if not await self._window.test(item, service, "tokens"):
                raise self._refused(service, "tokens per minute", headers, "tokens")
        return headers

    def release(self, service: str, state: LimitState) -> None:
        """A request of ``service`` is done: free its concurrency slot."""
        if state.concurrent:
            self._running[service] -= 1
            state.concurrent = False

    async def charge(self, service: str, tokens: int) -> None:
        """Count the tokens a finished request of ``service`` read and wrote."""
        limits = self.limits_of(service)
        if limits.tokens_per_minute and tokens > 0:
            item = RateLimitItemPerMinute(limits.tokens_per_minute)
            # Charged even past the limit: the window then stays spent for longer.
            cost = min(tokens, limits.tokens_per_minute)
            await self._window.hit(item, service, "tokens", cost=cost)

    async def _headers(self, item: RateLimitItemPerMinute, service: str, kind: str) -> dict:
        stats = await self._window.get_window_stats(item, service, kind)
        reset = max(0.0, stats.reset_time - time.time())
        return {
            f"x-ratelimit-limit-{kind}": str(item.amount),
            f"x-ratelimit-remaining-{kind}": str(max(0, stats.remaining)),
            f"x-ratelimit-reset-{kind}": f"{reset:.1f}s",
        }

    def _refused(
        self, service: str, what: str, headers: dict[str, str], kind: str
    ) -> RateLimitError:
        reset = float(headers[f"x-ratelimit-reset-{kind}"].rstrip("s"))
        return RateLimitError(
            f"The {service!r} service is over its limit of "
            f"{headers[f'x-ratelimit-limit-{kind}']} {what}; retry in {math.ceil(reset)} s",
            code="rate_limit_exceeded",
            headers={**headers, "retry-after": str(max(1, math.ceil(reset)))},
        )
