"""Anthropic's Messages API with the official ``anthropic`` SDK, on the fake engine (which
thinks in Qwen3's tags and calls tools in Hermes's format when a scripted reply does): plain,
streamed (the events reassemble to the whole answer), thinking, tools, stop sequences,
count_tokens, ``x-api-key``, and errors in Anthropic's shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

DELTA = ServiceSpec(
    name="delta",
    key_prefix="delta_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(max_tokens=400, max_tokens_cap=2000, system_prompt="Be kind."),
)
THOUGHT = "<think>\nThe user greets me.\n</think>\n\nHello there!"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALLS = (
    'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    "</tool_call>"
)
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    pm = plugin_manager(DELTA, ALPHA)
    with run_server({}, pm, mlx_host_cache_dir, fake=True) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.keys["delta"])


def outline(content: list[Any]) -> list[tuple[str, Any]]:
    """What a message's blocks hold, without their ids."""
    out: list[tuple[str, Any]] = []
    for block in content:
        block = block if isinstance(block, dict) else block.model_dump()
        if block["type"] == "text":
            out.append(("text", block["text"]))
        elif block["type"] == "thinking":
            out.append(("thinking", block["thinking"]))
        else:
            out.append((block["name"], block["input"]))
    return out


def streamed(client: anthropic.Anthropic, **body: Any) -> tuple[list[Any], Any]:
    """The events of a streamed message, and the message the SDK assembles from them."""
    with client.messages.stream(**body) as stream:
        events = list(stream)
        final = stream.get_final_message()
    return events, final


def test_a_plain_answer_whole_and_streamed(client, fake) -> None:
    fake.reply("Hello there!")
    message = client.messages.create(model="default", max_tokens=100, messages=HI)
    assert message.type == "message" and message.role == "assistant"
    assert outline(message.content) == [("text", "Hello there!")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == len("Hello there!")
    # The service's policy applies, as on every other endpoint.
    assert fake.last.messages == [{"role": "system", "content": "Be kind."}, *HI]

    fake.reply("Hello there!")
    events, final = streamed(client, model="default", max_tokens=100, messages=HI)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert events[0].message.usage.input_tokens == message.usage.input_tokens
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert outline(final.content) == outline(message.content)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 12


def test_thinking_comes_in_thinking_blocks(client, fake) -> None:
    expected = [("thinking", "The user greets me."), ("text", "Hello there!")]
    body = {"model": "default", "max_tokens": 2000, "messages": HI,
            "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    fake.reply(THOUGHT)
    assert outline(client.messages.create(**body).content) == expected
    assert fake.last.options == {"enable_thinking": True}
    fake.reply(THOUGHT)
    _, final = streamed(client, **body)
    assert outline(final.content) == expected
    fake.reply(THOUGHT)
    hidden = client.messages.create(**{**body, "thinking": {**body["thinking"],
                                                            "display": "omitted"}})  # fmt: skip
    assert outline(hidden.content) == [("thinking", ""), ("text", "Hello there!")]
    client.messages.create(**{**body, "thinking": {"type": "disabled"}})
    assert fake.last.options == {"enable_thinking": False}
    # Anthropic's default is no thinking: switched off where the template can.
    client.messages.create(model="default", max_tokens=100, messages=HI)
    assert fake.last.options == {"enable_thinking": False}


def test_tool_use_whole_streamed_and_answered(client, fake) -> None:
    expected = [("text", "Let me check."), ("get_weather", {"city": "Paris"}),
                ("get_weather", {"city": "Oslo"})]  # fmt: skip
    ask = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    fake.reply(CALLS)
    message = client.messages.create(model="default", max_tokens=400, messages=ask,
                                     tools=[WEATHER])  # fmt: skip
    assert outline(message.content) == expected and message.stop_reason == "tool_use"
    fake.reply(CALLS)
    _, final = streamed(client, model="default", max_tokens=400, messages=ask, tools=[WEATHER])
    assert outline(final.content) == expected and final.stop_reason == "tool_use"

    uses = [b for b in message.content if b.type == "tool_use"]
    fake.reply("Sunny in Paris; Oslo failed.")
    client.messages.create(
        model="default", max_tokens=400, tools=[WEATHER],
        messages=[*ask, {"role": "assistant", "content": message.content},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
                      {"type": "tool_result", "tool_use_id": uses[1].id, "is_error": True,
                       "content": [{"type": "text", "text": "timeout"}]},
                      {"type": "text", "text": "Summarize."}]}],
    )  # fmt: skip
    history = fake.last.messages[1:]  # after the service's system prompt
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "user"]
    assert history[1]["content"] == "Let me check."
    assert [c["function"]["arguments"] for c in history[1]["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Oslo"},
    ]  # fmt: skip
    assert [m["content"] for m in history[2:]] == ["sunny", "Error: timeout", "Summarize."]
    assert history[3]["tool_call_id"] == uses[1].id

    client.messages.create(model="default", max_tokens=400, messages=ask, tools=[WEATHER],
                           tool_choice={"type": "tool", "name": "get_weather"})  # fmt: skip
    assert fake.last.format.type == "grammar"  # the call is held while decoding


def test_stop_sequences_and_max_tokens_say_why_the_answer_ended(client, fake) -> None:
    fake.reply("one, two, three")
    message = client.messages.create(model="default", max_tokens=100, messages=HI,
                                     stop_sequences=["three", ", t"])  # fmt: skip
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == ", t"
    assert outline(message.content) == [("text", "one")]
    fake.reply("one, two, three")
    _, final = streamed(client, model="default", max_tokens=100, messages=HI,
                        stop_sequences=["two"])  # fmt: skip
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "two"
    fake.reply("one, two, three")
    cut = client.messages.create(model="default", max_tokens=3, messages=HI)
    assert cut.stop_reason == "max_tokens" and outline(cut.content) == [("text", "one")]


def test_count_tokens_counts_the_prompt_the_model_would_read(client, fake) -> None:
    counted = client.messages.count_tokens(model="default", messages=HI, system="Short.")
    fake.reply("ok")
    message = client.messages.create(model="default", max_tokens=10, messages=HI,
                                     system="Short.")  # fmt: skip
    assert counted.input_tokens == message.usage.input_tokens + (
        message.usage.cache_read_input_tokens or 0
    )
    assert counted.input_tokens == len(fake.last.prompt)  # the fake: a token a character


def test_keys_work_in_x_api_key_and_the_bearer_header(server: RunningServer, fake) -> None:
    fake.reply("ok")
    body = {"model": "default", "max_tokens": 10, "messages": HI}
    for headers in ({"x-api-key": server.keys["delta"]},
                    {"Authorization": f"Bearer {server.keys['delta']}"}):  # fmt: skip
        answer = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers)
        assert answer.status_code == 200 and answer.headers["request-id"]
    # x-api-key works on the OpenAI endpoints too: one key, one service.
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers={"x-api-key": server.keys[
        "delta"]}, json={"messages": HI})  # fmt: skip
    assert chat.status_code == 200


@pytest.mark.parametrize(("headers", "body", "status", "kind"), [
    ({}, {"model": "default", "max_tokens": 10, "messages": HI}, 401, "authentication_error"),
    (None, {"model": "default", "messages": HI}, 400, "invalid_request_error"),
    (None, {"model": "claude-opus-9", "max_tokens": 10, "messages": HI}, 404, "not_found_error"),
    (None, {"model": "default", "max_tokens": 10, "messages": HI, "top_k": 5}, 400,
     "invalid_request_error"),
    (None, {"model": "default", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": "x"}}]}]}, 400,
     "invalid_request_error"),
    (None, {"model": "default", "max_tokens": 100_000, "messages": HI}, 400,
     "invalid_request_error"),
    (None, {"model": "default", "max_tokens": 10, "messages": HI, "mcp_servers": []}, 400,
     "invalid_request_error"),
    (None, {"model": "default", "max_tokens": 10, "messages": [
        *HI, {"role": "assistant", "content": "The answer is"}]}, 400, "invalid_request_error"),
])  # fmt: skip
def test_errors_take_anthropics_shape(
    server: RunningServer, headers: dict | None, body: dict, status: int, kind: str
) -> None:
    headers = {"x-api-key": server.keys["delta"]} if headers is None else headers
    answer = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers)
    assert answer.status_code == status
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert set(error) == {"type", "error"} and set(error["error"]) == {"type", "message"}


def test_the_sdk_raises_its_own_errors(server: RunningServer) -> None:
    wrong = anthropic.Anthropic(base_url=server.url, api_key="delta_" + "x" * 32)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="default", max_tokens=10, messages=HI)
    client = anthropic.Anthropic(base_url=server.url, api_key=server.keys["delta"])
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-opus-9", max_tokens=10, messages=HI)
    assert "claude-opus-9" in missing.value.message


def test_oversized_bodies_are_anthropic_413s(server: RunningServer) -> None:
    limit = server.app.state.host.settings.max_request_bytes
    body = {"model": "default", "max_tokens": 10,
            "messages": [{"role": "user", "content": "x" * (limit + 1)}]}  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/messages", json=body,
                        headers={"x-api-key": server.keys["delta"]})  # fmt: skip
    assert answer.status_code == 413 and answer.json()["error"]["type"] == "request_too_large"


def test_errors_name_this_apis_fields(server: RunningServer) -> None:
    headers = {"x-api-key": server.keys["delta"]}
    body = {"model": "default", "max_tokens": 10, "messages": HI, "tools": [WEATHER],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "tool_choice.disable_parallel_tool_use" in message and "parallel_tool_calls" not in (
        message.replace("disable_parallel_tool_use", "")
    )
    over = httpx.post(
        f"{server.url}/v1/messages",
        headers=headers,
        json={**body, "tools": None, "tool_choice": None, "max_tokens": 9999},
    )
    assert "max_tokens 9999" in over.json()["error"]["message"]


def test_a_failure_mid_stream_ends_with_an_error_event(client, fake) -> None:
    fake.reply("Hello there!")
    fake.fail(after=5)
    stream = client.messages.create(model="default", max_tokens=100, messages=HI, stream=True)
    with stream, pytest.raises(anthropic.APIStatusError) as failed:
        list(stream)
    assert failed.value.body["error"]["type"] == "api_error"
    fake.reply("Fine again.")
    message = client.messages.create(model="default", max_tokens=100, messages=HI)
    assert outline(message.content) == [("text", "Fine again.")]
