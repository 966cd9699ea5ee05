"""``/sessions``: server-side conversations of the caller's service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.errors import error_responses
from mlx_host.sessions import Message, Session

router = APIRouter(
    prefix="/sessions", tags=["sessions"], responses=error_responses(400, 401, 404, 413, 503)
)


class SessionCreate(BaseModel):
    """Body of ``POST /sessions``."""

    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


class MessagesAppend(BaseModel):
    """Body of ``POST /sessions/{id}/messages``: messages appended together, in order."""

    messages: list[Message] = Field(min_length=1, max_length=100)


@router.post("", status_code=201)
async def create_session(body: SessionCreate, caller: Caller, host: HostDep) -> Session:
    """Create an empty session owned by the caller's service."""
    return await host.sessions.create(caller.spec.name, body.metadata)


@router.get("")
async def list_sessions(
    caller: Caller,
    host: HostDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[
        str | None, Query(description="Id of the last session of the previous page.")
    ] = None,
) -> dict[str, Any]:
    """The caller's service's sessions, oldest first, one page at a time."""
    page, has_more = await host.sessions.page(caller.spec.name, limit, after)
    return {"object": "list", "data": page, "has_more": has_more}


@router.get("/{session_id}")
async def get_session(session_id: str, caller: Caller, host: HostDep) -> Session:
    """One session; 404 when it does not exist or belongs to another service."""
    return await host.sessions.get(caller.spec.name, session_id)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, caller: Caller, host: HostDep) -> Response:
    """Delete a session and its messages."""
    await host.sessions.delete(caller.spec.name, session_id)
    return Response(status_code=204)


@router.get("/{session_id}/messages")
async def list_messages(session_id: str, caller: Caller, host: HostDep) -> dict[str, Any]:
    """The session's messages, oldest first."""
    messages = await host.sessions.messages(caller.spec.name, session_id)
    return {"object": "list", "data": messages}


@router.post("/{session_id}/messages")
async def append_messages(
    session_id: str, body: MessagesAppend, caller: Caller, host: HostDep
) -> Session:
    """Append messages to the session without generating (to seed or import a history)."""
    return await host.sessions.append(caller.spec.name, session_id, body.messages)
