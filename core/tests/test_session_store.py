"""One behavioural suite, run against both session backends (memory and a real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from mlx_host.errors import NotFoundError, ServiceUnavailableError
from mlx_host.sessions import Message, SessionStore, StoredResponse, open_store
from mlx_host.sessions.store import new_response_id

MakeStore = Callable[..., SessionStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Builds stores of one backend; Redis stores share a namespace per test."""
    backend = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    namespace = f"test-{uuid.uuid4().hex[:8]}"

    def make(ttl: float = 3600) -> SessionStore:
        if backend == "redis":
            return open_store("redis", ttl, url, namespace=namespace)
        return open_store("memory", ttl, url)

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[SessionStore]:
    s = make_store()
    yield s
    await s.close()


def user(text: str) -> Message:
    return Message(role="user", content=text)


async def test_create_get_and_metadata(store: SessionStore) -> None:
    created = await store.create("vista", {"patient": "rex"})
    got = await store.get("vista", created.id)
    assert got.id == created.id and got.metadata == {"patient": "rex"}
    assert got.service == "vista" and got.message_count == 0


async def test_messages_come_back_in_order(store: SessionStore) -> None:
    s = await store.create("vista", {})
    await store.append("vista", s.id, [user("one"), Message(role="assistant", content="two")])
    updated = await store.append("vista", s.id, [user("three")])
    assert updated.message_count == 3
    assert [m.content for m in await store.messages("vista", s.id)] == ["one", "two", "three"]


async def test_other_services_see_nothing(store: SessionStore) -> None:
    s = await store.create("vista", {})
    await store.append("vista", s.id, [user("secret")])
    for call in (
        store.get("fork", s.id),
        store.messages("fork", s.id),
        store.append("fork", s.id, [user("x")]),
        store.delete("fork", s.id),
    ):
        with pytest.raises(NotFoundError):
            await call
    assert (await store.page("fork", 10))[0] == []
    assert [m.content for m in await store.messages("vista", s.id)] == ["secret"]


async def test_list_paginates_oldest_first(store: SessionStore) -> None:
    ids = [(await store.create("fork", {"n": str(i)})).id for i in range(5)]
    page, more = await store.page("fork", 2)
    assert [s.id for s in page] == ids[:2] and more
    page, more = await store.page("fork", 2, after=page[-1].id)
    assert [s.id for s in page] == ids[2:4] and more
    page, more = await store.page("fork", 2, after=page[-1].id)
    assert [s.id for s in page] == ids[4:] and not more


async def test_delete(store: SessionStore) -> None:
    s = await store.create("vista", {})
    await store.delete("vista", s.id)
    with pytest.raises(NotFoundError):
        await store.get("vista", s.id)
    assert (await store.page("vista", 10))[0] == []


async def test_concurrent_appends_never_interleave(store: SessionStore) -> None:
    s = await store.create("vista", {})
    turns = 20

    async def turn(i: int) -> None:
        await store.append(
            "vista", s.id, [user(f"q{i}"), Message(role="assistant", content=f"a{i}")]
        )

    await asyncio.gather(*(turn(i) for i in range(turns)))
    contents = [m.content for m in await store.messages("vista", s.id)]
    assert len(contents) == 2 * turns
    for q, a in zip(contents[::2], contents[1::2], strict=True):
        assert q.startswith("q") and a == "a" + q[1:]


async def test_ttl_expires_and_use_extends_it(make_store: MakeStore) -> None:
    store = make_store(ttl=1.5)
    kept, dropped = await store.create("vista", {}), await store.create("vista", {})
    for _ in range(4):  # 2 s in all; each use comes a second before the TTL runs out
        await asyncio.sleep(0.5)
        await store.get("vista", kept.id)
    with pytest.raises(NotFoundError):
        await store.get("vista", dropped.id)
    assert [s.id for s in (await store.page("vista", 10))[0]] == [kept.id]
    await store.close()


async def test_new_store_instance_sees_redis_sessions(redis_url: str) -> None:
    """What a host restart does: a fresh connection finds everything."""
    first = open_store("redis", 3600, redis_url, namespace="restart")
    s = await first.create("vista", {})
    await first.append("vista", s.id, [user("remember me")])
    await first.close()
    second = open_store("redis", 3600, redis_url, namespace="restart")
    assert [m.content for m in await second.messages("vista", s.id)] == ["remember me"]
    await second.close()


async def test_unreachable_redis_is_503() -> None:
    store = open_store("redis", 3600, "redis://127.0.0.1:1/0")
    with pytest.raises(ServiceUnavailableError, match="session store"):
        await store.create("vista", {})
    await store.close()


async def test_ids_of_another_form_never_reach_the_backend(store: SessionStore) -> None:
    session = await store.create("vista", {})
    await store.append("vista", session.id, [user("keep me")])
    for alias in (f"{session.id}:messages", f"{session.id}*", "sess_*", "", "x" * 500):
        with pytest.raises(NotFoundError):
            await store.get("vista", alias)
        with pytest.raises(NotFoundError):
            await store.delete("vista", alias)
        with pytest.raises(NotFoundError):
            await store.append("vista", alias, [user("lost")])
    assert [m.content for m in await store.messages("vista", session.id)] == ["keep me"]
    assert (await store.get("vista", session.id)).message_count == 1


async def test_stored_responses_belong_to_their_service_and_expire(
    make_store: MakeStore,
) -> None:
    store = make_store(ttl=1.5)
    kept = StoredResponse(
        id=new_response_id(),
        response={"id": "x", "output": []},
        messages=[user("hi"), Message(role="assistant", content="hello")],
    )
    dropped = kept.model_copy(update={"id": new_response_id()})
    for stored in (kept, dropped):
        await store.save_response("vista", stored)
    assert await store.load_response("vista", kept.id) == kept
    for alias in (kept.id, f"{kept.id}*", "resp_*", "x" * 500):
        with pytest.raises(NotFoundError):
            await store.load_response("fork", alias)
        with pytest.raises(NotFoundError):
            await store.delete_response("fork", alias)
    for _ in range(4):  # 2 s in all; each use comes a second before the TTL runs out
        await asyncio.sleep(0.5)
        await store.load_response("vista", kept.id)
    with pytest.raises(NotFoundError):
        await store.load_response("vista", dropped.id)
    await store.delete_response("vista", kept.id)
    with pytest.raises(NotFoundError):
        await store.load_response("vista", kept.id)
    with pytest.raises(ValueError):
        await store.save_response("vista", kept.model_copy(update={"id": "resp_*"}))
    await store.close()
