"""``GET /metrics``: the server's Prometheus metrics (``mlx_host.metrics``), for the admin key
or the metrics key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlx_host.api.deps import Credentials, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.errors import AuthenticationError, PermissionDeniedError
from mlx_host.keys import same_secret

router = APIRouter(tags=["metrics"], responses=error_responses(401, 403))


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(request: Request, host: HostDep, credentials: Credentials) -> Response:
    """Requests by service, route and status; latency and time-to-first-token histograms;
    tokens by service and model; 429s; memory; model loads, evictions and load time; each
    model's running and queued requests. Needs the admin key or ``MLX_HOST_METRICS_KEY``."""
    allowed = [k for k in (host.settings.admin_key, host.settings.metrics_key) if k is not None]
    if not allowed:
        raise PermissionDeniedError(
            "Metrics are disabled: set MLX_HOST_METRICS_KEY or MLX_HOST_ADMIN_KEY"
        )
    if credentials is None or not any(
        same_secret(credentials, key.get_secret_value()) for key in allowed
    ):
        raise AuthenticationError("/metrics needs the metrics key or the admin key")
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
