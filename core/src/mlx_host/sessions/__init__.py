"""Server-side conversation history (sessions, stored responses), owned by the service whose
key created it."""

from mlx_host.sessions.store import Message, Session, SessionStore, StoredResponse, open_store

__all__ = ["Message", "Session", "SessionStore", "StoredResponse", "open_store"]
