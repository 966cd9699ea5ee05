"""Sessions over HTTP: CRUD, isolation, chat with session_id, Redis across hosts and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ALPHA, BETA, plugin_manager

from mlx_host.testing import RunningServer, run_server


class Api:
    """httpx calls to one server with one service's key."""

    def __init__(self, server: RunningServer, service: str) -> None:
        self.base = f"{server.url}/api/v1"
        self.headers = {"Authorization": f"Bearer {server.keys[service]}"}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.base + path, headers=self.headers, timeout=120, **kw)

    def new_session(self, **metadata: str) -> str:
        response = self.call("POST", "/sessions", json={"metadata": metadata})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        response = self.call("GET", f"/sessions/{session_id}/messages")
        assert response.status_code == 200, response.text
        return response.json()["data"]


def chat(server: RunningServer, session_id: str, text: str, **kw: Any) -> Any:
    return server.openai("alpha").chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": text}],
        max_tokens=kw.pop("max_tokens", 12),
        extra_body={"session_id": session_id},
        **kw,
    )


def test_crud_and_pagination(server: RunningServer) -> None:
    api = Api(server, "alpha")
    ids = [api.new_session(n=str(i)) for i in range(3)]
    got = api.call("GET", f"/sessions/{ids[0]}").json()
    assert got["metadata"] == {"n": "0"} and got["service"] == "alpha"
    page = api.call("GET", "/sessions", params={"limit": 2}).json()
    assert page["has_more"]
    rest = api.call("GET", "/sessions", params={"limit": 100, "after": page["data"][-1]["id"]})
    listed = [s["id"] for s in page["data"] + rest.json()["data"]]
    assert listed[-3:] == ids
    assert api.call("DELETE", f"/sessions/{ids[0]}").status_code == 204
    assert api.call("GET", f"/sessions/{ids[0]}").status_code == 404


def test_another_service_gets_404_never_the_data(server: RunningServer) -> None:
    alpha, beta = Api(server, "alpha"), Api(server, "beta")
    session_id = alpha.new_session()
    alpha.call("POST", f"/sessions/{session_id}/messages",
               json={"messages": [{"role": "user", "content": "private"}]})  # fmt: skip
    for method, path in [
        ("GET", f"/sessions/{session_id}"),
        ("GET", f"/sessions/{session_id}/messages"),
        ("DELETE", f"/sessions/{session_id}"),
    ]:
        response = beta.call(method, path)
        assert response.status_code == 404
        assert "private" not in response.text
    assert session_id not in beta.call("GET", "/sessions").text
    assert [m["content"] for m in alpha.messages(session_id)] == ["private"]


def test_chat_with_a_session_remembers_turns(server: RunningServer) -> None:
    api = Api(server, "alpha")
    session_id = api.new_session()
    first = chat(server, session_id, "My name is Ada. Say hello.")
    second = chat(server, session_id, "What is my name?")
    stored = api.messages(session_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"] == "My name is Ada. Say hello."
    assert stored[1]["content"] == first.choices[0].message.content
    assert stored[3]["content"] == second.choices[0].message.content
    # The second prompt carried the first turn.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    assert second.model_extra["session"] == {"id": session_id, "trimmed_messages": 0}


def test_streamed_reply_is_saved_when_complete(server: RunningServer) -> None:
    api = Api(server, "alpha")
    session_id = api.new_session()
    stream = chat(server, session_id, "Name a color.", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert [m["content"] for m in api.messages(session_id)] == ["Name a color.", text]


def test_disconnect_saves_nothing(server: RunningServer) -> None:
    api = Api(server, "alpha")
    session_id = api.new_session()
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 200,
            "stream": True, "session_id": session_id}  # fmt: skip
    url = f"{api.base}/chat/completions"
    with httpx.stream("POST", url, headers=api.headers, json=body, timeout=60) as response:
        next(response.iter_lines())
    assert api.messages(session_id) == []


def test_failed_request_appends_nothing(server: RunningServer) -> None:
    api = Api(server, "alpha")
    session_id = api.new_session()
    with pytest.raises(openai.BadRequestError):
        chat(server, session_id, "hi", max_tokens=100_000)
    assert api.messages(session_id) == []


def test_unknown_session_is_404_before_generating(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError):
        chat(server, "sess_nope", "hi")


def test_history_beyond_the_context_is_trimmed_and_reported(server: RunningServer) -> None:
    api = Api(server, "alpha")
    session_id = api.new_session()
    chat(server, session_id, "Hello.", max_tokens=2)  # loads the model
    (model,) = server.app.state.host.models.loaded()
    # A short context keeps the prefill cheap on CPU; the rule is the same at 8192 tokens.
    full_context, model.engine.context_length = model.engine.context_length, 400
    try:
        filler = "lorem ipsum dolor sit amet " * 12  # ~85 tokens a message
        old = [{"role": r, "content": filler} for _ in range(4) for r in ("user", "assistant")]
        api.call("POST", f"/sessions/{session_id}/messages", json={"messages": old})
        reply = chat(server, session_id, "Say ok.", max_tokens=5)
    finally:
        model.engine.context_length = full_context
    assert reply.model_extra["session"]["trimmed_messages"] > 0
    assert reply.usage.prompt_tokens + 5 <= 400
    assert len(api.messages(session_id)) == 2 + len(old) + 2  # trimming never deletes history


@pytest.fixture
def redis_host(redis_url: str, mlx_host_cache_dir: Path) -> Iterator[Any]:
    """Factory for servers on the shared Redis, all accepting the same keys."""
    keys: dict[str, str] = {}

    def start() -> AbstractContextManager[RunningServer]:
        settings = {"session_backend": "redis", "redis_url": redis_url}
        pm = plugin_manager(ALPHA, BETA)
        return run_server(settings, pm, mlx_host_cache_dir, keys=keys or None)

    yield start, keys


def test_two_hosts_and_a_restart_share_one_conversation(redis_host: Any) -> None:
    start, keys = redis_host
    with start() as first:
        keys.update(first.keys)
        session_id = Api(first, "alpha").new_session()
        chat(first, session_id, "Turn one.")
        with start() as second:
            chat(second, session_id, "Turn two.")
            assert Api(first, "alpha").messages(session_id)[2]["content"] == "Turn two."
    with start() as restarted:
        chat(restarted, session_id, "Turn three.")
        contents = [m["content"] for m in Api(restarted, "alpha").messages(session_id)]
    assert contents[::2] == ["Turn one.", "Turn two.", "Turn three."]


def test_parallel_turns_on_one_session_keep_pairs_together(redis_host: Any) -> None:
    start, _ = redis_host
    with start() as server:
        api = Api(server, "alpha")
        session_id = api.new_session()

        async def turns() -> None:
            await asyncio.gather(
                *(asyncio.to_thread(chat, server, session_id, f"Question {i}?") for i in range(4))
            )

        asyncio.run(turns())
        stored = api.messages(session_id)
    assert len(stored) == 8
    assert [m["role"] for m in stored] == ["user", "assistant"] * 4


def test_redis_down_is_503_for_sessions_only(mlx_host_cache_dir: Path) -> None:
    settings = {"session_backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
    with run_server(settings, plugin_manager(ALPHA), mlx_host_cache_dir) as server:
        api = Api(server, "alpha")
        response = api.call("POST", "/sessions", json={})
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "session_store_unavailable"
        assert "127.0.0.1" not in error["message"] and "redis://" not in error["message"]
        reply = server.openai("alpha").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content is not None


ALIASES = [":messages", ":x", "*", "%0A", " ", "%2A", "%3Amessages", "%3A"]


def assert_no_aliasing(server: RunningServer) -> None:
    """Ids that are not the server's own form are 404 and reach no storage: a suffix such as
    ``:messages`` must not address the session's message list (it once did on Redis)."""
    api = Api(server, "alpha")
    session_id = api.new_session()
    stored = [{"role": "user", "content": f"m{i}"} for i in range(3)]
    assert api.call(
        "POST", f"/sessions/{session_id}/messages", json={"messages": stored}
    ).is_success
    for suffix in ALIASES:
        alias = f"/sessions/{session_id}{suffix}"
        for method, path in (("GET", alias), ("DELETE", alias), ("GET", f"{alias}/messages")):
            response = api.call(method, path)
            assert response.status_code == 404, (method, path, response.text)
    for bad in ("sess_*", "*", "x" * 300):
        assert api.call("GET", f"/sessions/{bad}").status_code == 404
    assert api.call("GET", "/sessions", params={"after": f"{session_id}:messages"}).json() == {
        "object": "list",
        "data": [],
        "has_more": False,
    }
    assert [m["content"] for m in api.messages(session_id)] == ["m0", "m1", "m2"]
    assert api.call("GET", f"/sessions/{session_id}").json()["message_count"] == 3


def test_ids_cannot_alias_other_keys_in_memory(server: RunningServer) -> None:
    assert_no_aliasing(server)


def test_ids_cannot_alias_other_keys_in_redis(redis_host: Any) -> None:
    start, _ = redis_host
    with start() as server:
        assert_no_aliasing(server)
