"""The API's streaming and request handling, checked on the fake engine: independent of the
machine's speed, and of what a model happens to answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host.testing import RunningServer, run_server


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server({}, plugin_manager(ALPHA), mlx_host_cache_dir, fake=True) as running:
        yield running


@pytest.fixture
def fake(server: RunningServer):
    assert server.fake is not None
    server.fake.clear()
    return server.fake


def test_the_first_piece_arrives_before_the_answer_is_finished(server: RunningServer, fake) -> None:
    fake.reply("streamed, not buffered")
    with fake.hold():
        stream = server.openai("alpha").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = iter(stream)
        opening = next(chunks)
        first = next(chunks)  # arrives while the rest of the answer is still held back
        assert opening.choices[0].delta.role == "assistant"
        assert first.choices[0].delta.content == "s"
    rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "s" + rest == "streamed, not buffered"


def test_stop_strings_and_max_tokens_reach_the_engine(server: RunningServer, fake) -> None:
    fake.reply("one two STOP three", "abcdefghij")
    client = server.openai("alpha")
    hi = [{"role": "user", "content": "hi"}]
    stopped = client.chat.completions.create(model="default", messages=hi, stop=["STOP"])
    assert stopped.choices[0].message.content == "one two "
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(model="default", messages=hi, max_tokens=4)
    assert cut.choices[0].message.content == "abcd"
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 4
    assert fake.requests[0].params.stop == ("STOP",) and fake.requests[1].params.max_tokens == 4


def test_a_client_leaving_mid_answer_frees_the_engine(server: RunningServer, fake) -> None:
    server.openai("alpha").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    model = server.app.state.host.models.get_loaded("smollm2-135m-instruct")
    fake.reply("a long answer that never gets to finish")
    with fake.hold():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.api_url}/chat/completions",
                headers={"Authorization": f"Bearer {server.keys['alpha']}"},
                json={"messages": [{"role": "user", "content": "hi"}]},
                timeout=1,
            )
        deadline = time.monotonic() + 10
        while model.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_completions_send_the_raw_prompt(server: RunningServer, fake) -> None:
    reply = server.openai("alpha").completions.create(
        model="default", prompt="Once upon", max_tokens=3
    )
    assert fake.last.capability == "completion" and fake.last.prompt == "Once upon"
    assert fake.last.messages is None and reply.choices[0].text == "Onc"
