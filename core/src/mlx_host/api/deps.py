"""Dependencies shared by the routers (use them as ``Annotated`` parameter types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mlx_host.api.access import record_of
from mlx_host.errors import AuthenticationError, PermissionDeniedError
from mlx_host.host import Host
from mlx_host.keys import same_secret
from mlx_host.plugins import InstalledService

_bearer = HTTPBearer(auto_error=False, description="An API key: its prefix names the service.")
_api_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="The same keys, as Anthropic's SDKs send them."
)


def get_credentials(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> str | None:
    """The request's API key: the bearer token, else the ``x-api-key`` header."""
    return bearer.credentials if bearer is not None else api_key


Credentials = Annotated[str | None, Depends(get_credentials)]


def get_host(request: Request) -> Host:
    """The app's assembled host."""
    return request.app.state.host


HostDep = Annotated[Host, Depends(get_host)]


async def get_caller(request: Request, host: HostDep, credentials: Credentials) -> InstalledService:
    """The service of the request's key (recorded for its access line); 401 when missing or
    unknown."""
    if credentials is None:
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')",
            code="missing_api_key",
        )
    service = await host.keys.lookup(credentials)
    if service is None:
        raise AuthenticationError("Incorrect API key provided")
    record = record_of(request)
    record.service = service
    if record.limits is None:  # once per request, however many dependencies ask
        record.limits = await host.limits.admit(service)
    return host.services[service]


Caller = Annotated[InstalledService, Depends(get_caller)]


async def get_reader(
    request: Request, host: HostDep, credentials: Credentials
) -> InstalledService | None:
    """For read-only status endpoints: a service key (its service) or the admin key (None)."""
    admin = host.settings.admin_key
    if (
        credentials is not None
        and admin is not None
        and same_secret(credentials, admin.get_secret_value())
    ):
        return None
    return await get_caller(request, host, credentials)


Reader = Annotated[InstalledService | None, Depends(get_reader)]


def require_service(name: str) -> Callable[[InstalledService], None]:
    """A dependency that lets only keys of service ``name`` through (403 for others)."""

    def check(caller: Caller) -> None:
        if caller.spec.name != name:
            raise PermissionDeniedError(f"These endpoints belong to the {name!r} service")

    return check


def require_admin(host: HostDep, credentials: Credentials) -> None:
    """Management endpoints: only the admin key; 403 when none is configured."""
    admin = host.settings.admin_key
    if admin is None:
        raise PermissionDeniedError("Management is disabled: set MLX_HOST_ADMIN_KEY")
    if credentials is None or not same_secret(credentials, admin.get_secret_value()):
        raise AuthenticationError("This endpoint needs the admin key")
