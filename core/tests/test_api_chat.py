"""Chat completions end to end: real server, real SmolLM2, official openai SDK and httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from conftest import held_after_first_token

from mlx_host.testing import RunningServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_answers_with_the_embedded_model(server: RunningServer) -> None:
    reply = server.openai("alpha").chat.completions.create(
        model="default", messages=QUESTION, max_tokens=30
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "smollm2-135m-instruct"
    usage = reply.usage
    assert usage.prompt_tokens > 10
    assert 0 < usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_omitted_model_means_the_service_default(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.keys['alpha']}"},
        json={"messages": QUESTION, "max_tokens": 5},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "smollm2-135m-instruct"


def test_streaming_arrives_token_by_token(server: RunningServer) -> None:
    client = server.openai("alpha")
    stream = client.chat.completions.create(
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        model="default",
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) >= 10
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= len(pieces)


def test_stream_ends_with_done(server: RunningServer) -> None:
    with httpx.stream(
        "POST",
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.keys['alpha']}"},
        json={"messages": QUESTION, "max_tokens": 8, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > 3


def test_max_tokens_ends_with_length(server: RunningServer) -> None:
    reply = server.openai("alpha").chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


def test_stop_sequence_cuts_the_answer(server: RunningServer) -> None:
    client = server.openai("alpha")
    full = client.chat.completions.create(model="default", messages=QUESTION, max_tokens=30)
    assert "Paris" in full.choices[0].message.content
    cut = client.chat.completions.create(
        model="default", messages=QUESTION, max_tokens=30, stop=["Paris"]
    )
    text = cut.choices[0].message.content
    assert "Paris" not in text
    assert full.choices[0].message.content.startswith(text)
    assert cut.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(server: RunningServer) -> None:
    client = server.openai("alpha")

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Invent a name for a cat."}],
            max_tokens=12,
            temperature=1.0,
            top_p=0.95,
            seed=seed,
        )
        return reply.choices[0].message.content

    first, again = sample(7), sample(7)
    assert first == again
    others = {sample(seed) for seed in (1, 2, 3)}
    assert len(others | {first}) > 1


def test_concurrent_requests_match_sequential_ones(server: RunningServer) -> None:
    """Greedy answers do not depend on what else shares the continuous batch."""
    prompts = ["Name a color.", "What is 2 plus 2?", "Name a fruit.", "Say hello."]
    client = server.openai("alpha")

    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            temperature=0,
        )
        return reply.choices[0].message.content

    sequential = [ask(p) for p in prompts]

    async def together() -> list[str]:
        return list(await asyncio.gather(*(asyncio.to_thread(ask, p) for p in prompts)))

    assert asyncio.run(together()) == sequential


def test_disconnect_frees_the_slot(server: RunningServer) -> None:
    server.openai("alpha").chat.completions.create(model="default", messages=QUESTION, max_tokens=1)
    (model,) = server.app.state.host.models.loaded()
    scheduler = model.engine.scheduler
    with held_after_first_token(server):
        with httpx.stream(
            "POST",
            f"{server.api_url}/chat/completions",
            headers={"Authorization": f"Bearer {server.keys['alpha']}"},
            json={"messages": QUESTION, "max_tokens": 200, "stream": True},
            timeout=60,
        ) as response:
            lines = response.iter_lines()  # kept: dropping it would close the stream
            next(lines)
            assert scheduler.active_requests == 1
        wait_until(lambda: scheduler.active_requests == 0)
    wait_until(lambda: scheduler.running_requests == 0)  # the worker dropped it too


def test_model_without_weights_is_503(server: RunningServer) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        server.openai("beta", max_retries=0).chat.completions.create(
            model="default", messages=QUESTION
        )
    assert caught.value.status_code == 503
    assert "not-on-this-machine" in caught.value.message


def test_corrupt_model_is_503_and_others_keep_serving(server: RunningServer) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        server.openai("beta", max_retries=0).chat.completions.create(
            model="broken", messages=QUESTION
        )
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "model_load_failed"
    reply = server.openai("alpha").chat.completions.create(
        model="default", messages=QUESTION, max_tokens=10
    )
    assert reply.choices[0].message.content


def test_client_leaving_a_non_streaming_request_frees_the_slot(server: RunningServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 250}
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    url = f"{server.api_url}/chat/completions"
    assert httpx.post(url, headers=headers, json={**body, "max_tokens": 1}, timeout=60).is_success
    (model,) = server.app.state.host.models.loaded()
    scheduler = model.engine.scheduler
    with held_after_first_token(server):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, headers=headers, json=body, timeout=1)
        assert scheduler.running_requests == 1  # held in the batch when the client left
        wait_until(lambda: scheduler.active_requests == 0)
    wait_until(lambda: scheduler.running_requests == 0)


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
