"""Server-side conversation history, owned by the service whose key created it."""

from mlx_host.sessions.store import Message, Session, SessionStore, open_store

__all__ = ["Message", "Session", "SessionStore", "open_store"]
