"""A thinking model's reasoning apart from its answer: the tag splitter on every possible chunk
boundary, and the chat endpoint on the fake engine (which thinks in Qwen3's tags when a
scripted reply does), whole, streamed, switched by request, and kept out of sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host.markup import Piece, TagSplitter
from mlx_host.testing import RunningServer, run_server

THOUGHT = "<think>\nThe user greets me. I should greet back.\n</think>\n\nHello there!"


def split(text: str, cuts: list[int], inside: bool = False) -> tuple[str, str]:
    splitter = TagSplitter("<think>", "</think>", inside)
    pieces: list[Piece] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        pieces += splitter.feed(text[start:end])
    pieces += splitter.flush()
    assert all(p.text or p.closed for p in pieces)
    inner = "".join(p.text for p in pieces if p.inside)
    outer = "".join(p.text for p in pieces if not p.inside)
    return inner, outer


def test_tags_split_wherever_the_chunks_cut_them() -> None:
    expected = ("\nThe user greets me. I should greet back.\n", "\n\nHello there!")
    for cut in range(len(THOUGHT) + 1):
        assert split(THOUGHT, [cut]) == expected, cut
    for a in range(0, len(THOUGHT), 3):
        assert split(THOUGHT, [a, min(a + 2, len(THOUGHT))]) == expected
    assert split(THOUGHT, list(range(1, len(THOUGHT)))) == expected  # a character a chunk


def test_text_that_only_looks_like_a_tag_is_text() -> None:
    assert split("a <thin b", [4]) == ("", "a <thin b")
    assert split("x < y and <think", [5]) == ("", "x < y and <think")  # never completed
    # Opened in the prompt: the answer starts inside the thinking.
    assert split("plan</think>answer", [2], inside=True) == ("plan", "answer")


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server({}, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as running:
        yield running


ASK = [{"role": "user", "content": "Hi"}]


def post(server: RunningServer, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    body = {"max_tokens": 200, **body}  # the fake's token is a character
    return httpx.post(f"{server.api_url}/chat/completions", json=body, headers=headers)


def test_reasoning_comes_apart_from_the_answer(server: RunningServer, fake) -> None:
    fake.reply(THOUGHT)
    message = post(server, {"messages": ASK}).json()["choices"][0]["message"]
    assert message["content"] == "Hello there!"
    assert message["reasoning_content"] == "\nThe user greets me. I should greet back.\n"
    fake.reply("No thinking today.")
    plain = post(server, {"messages": ASK}).json()["choices"][0]["message"]
    assert plain["content"] == "No thinking today." and "reasoning_content" not in plain


def test_streamed_reasoning_arrives_as_its_own_deltas(server: RunningServer, fake) -> None:
    fake.reply(THOUGHT)  # the fake streams a character per token: every tag is cut
    stream = server.openai("alpha").chat.completions.create(
        model="default", messages=ASK, stream=True, max_tokens=200
    )
    reasoning, content = [], []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning.append(getattr(delta, "reasoning_content", None) or "")
        content.append(delta.content or "")
        assert "<" not in (delta.content or "") + (getattr(delta, "reasoning_content", "") or "")
    assert "".join(reasoning) == "\nThe user greets me. I should greet back.\n"
    assert "".join(content) == "Hello there!"


def test_thinking_is_switched_by_request(server: RunningServer, fake) -> None:
    post(server, {"messages": ASK, "reasoning_effort": "none"})
    assert fake.last.options == {"enable_thinking": False}
    post(server, {"messages": ASK, "reasoning_effort": "high"})
    assert fake.last.options == {"enable_thinking": True}
    post(server, {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}})
    assert fake.last.options == {"enable_thinking": False}
    refused = post(server, {"messages": ASK, "chat_template_kwargs": {"tools_in_user": True}})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "chat_template_kwargs.tools_in_user"


def test_keep_reasoning_needs_a_session(server: RunningServer) -> None:
    response = post(server, {"messages": ASK, "keep_reasoning": True})
    assert response.status_code == 400 and "session_id" in response.json()["error"]["message"]


def test_sessions_keep_the_answer_without_the_thinking_unless_asked(
    server: RunningServer, fake
) -> None:
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    for keep, stored in [(False, "Hello there!"), (True, THOUGHT)]:
        session = httpx.post(f"{server.api_url}/sessions", headers=headers, json={}).json()
        fake.reply(THOUGHT)
        body = {"messages": ASK, "session_id": session["id"], "keep_reasoning": keep}
        assert post(server, body).status_code == 200
        url = f"{server.api_url}/sessions/{session['id']}/messages"
        messages = httpx.get(url, headers=headers).json()["data"]
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == stored
