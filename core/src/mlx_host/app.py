"""The application factory: one FastAPI app per Host, every registered router under /api/v1
and /v1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from mlx_host.api import metrics
from mlx_host.api.access import AccessMiddleware
from mlx_host.api.anthropic_errors import AnthropicErrorMiddleware
from mlx_host.api.body_limit import BodyLimitMiddleware
from mlx_host.api.deps import require_service
from mlx_host.api.errors import error_responses, install_error_handlers
from mlx_host.errors import PluginError
from mlx_host.host import Host
from mlx_host.metrics import Metrics
from mlx_host.plugins import PluginManager
from mlx_host.settings import Settings, get_settings

logger = logging.getLogger(__name__)
API_PREFIXES = ("/api/v1", "/v1")
#: The Messages API's paths, whose errors take Anthropic's shape.
ANTHROPIC_PATHS = frozenset(
    f"{prefix}{path}" for prefix in API_PREFIXES for path in ("/messages", "/messages/count_tokens")
)


async def _unload_idle_models(host: Host, every_seconds: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await host.models.unload_idle()
        except Exception:  # keep sweeping; one failed unload must not stop the TTLs
            logger.exception("idle unload failed")


def create_app(settings: Settings | None = None, plugins: PluginManager | None = None) -> FastAPI:
    """Build the app: load plugins, mount their routers (the core's first), install error
    handling. Importing this module does not import MLX; the first model load does."""
    settings = settings or get_settings()
    host = Host.build(settings, plugins)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await host.models.auto_load()
        sweeper = asyncio.create_task(_unload_idle_models(host))
        yield
        sweeper.cancel()
        await host.models.close(settings.shutdown_timeout_seconds)
        await host.sessions.close()
        await host.keys.close()

    app = FastAPI(title="mlx-host", version="0.1.0", lifespan=lifespan)
    app.state.host = host
    app.state.metrics = Metrics(host.models)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        upload_bytes=settings.max_audio_bytes,
    )
    app.add_middleware(AnthropicErrorMiddleware, paths=ANTHROPIC_PATHS)  # the 413s too
    # Added last, so outermost: it sees every response, the body limit's 413s included.
    app.add_middleware(AccessMiddleware, metrics=app.state.metrics, limiter=host.limits)
    app.include_router(metrics.router)  # at the root, where Prometheus looks
    for route in host.plugins.routes():
        if route.service is not None and route.service not in host.services:
            raise PluginError(
                f"plugin {route.plugin!r} registered routes for the unknown service "
                f"{route.service!r}"
            )
        only = [Depends(require_service(route.service))] if route.service else []
        for prefix in API_PREFIXES:
            app.include_router(
                route.router,
                prefix=prefix,
                dependencies=only,
                responses=error_responses(401, 403) if only else None,
            )
    return app
