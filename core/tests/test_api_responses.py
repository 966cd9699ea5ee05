"""The Responses API with the official ``openai`` SDK, on the fake engine (which thinks in
Qwen3's tags and calls tools in Hermes's format when a scripted reply does): plain, streamed
(the events reassemble to the whole answer), multi-turn through ``previous_response_id``,
function tools, structured output, stored responses per service, and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

GAMMA = ServiceSpec(
    name="gamma",
    key_prefix="gamma_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(max_tokens=400, max_tokens_cap=1000),
)
THOUGHT = "<think>\nThe user greets me.\n</think>\n\nHello there!"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALLS = (
    'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    "</tool_call>"
)


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    pm = plugin_manager(GAMMA, ALPHA)
    with run_server({}, pm, mlx_host_cache_dir, fake=True) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai("gamma")


def outline(output: list[Any]) -> list[tuple[str, Any]]:
    """What an answer's output items hold, without their ids."""
    out: list[tuple[str, Any]] = []
    for item in output:
        item = item if isinstance(item, dict) else item.model_dump()
        if item["type"] == "message":
            out.append(("message", "".join(c["text"] for c in item["content"])))
        elif item["type"] == "reasoning":
            out.append(("reasoning", "".join(c["text"] for c in item["content"])))
        else:
            out.append((item["name"], json.loads(item["arguments"])))
    return out


def streamed(client: openai.OpenAI, **body: Any) -> tuple[list[Any], Any]:
    """The events of a streamed response and the response they end with, reassembled."""
    events = list(client.responses.create(stream=True, **body))
    items: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.type == "response.output_item.added":
            items[event.output_index] = event.item.model_dump()
        elif event.type in ("response.output_text.delta", "response.reasoning_text.delta"):
            item = items[event.output_index]
            if not item["content"]:
                item["content"] = [{"text": ""}]
            item["content"][0]["text"] += event.delta
        elif event.type == "response.function_call_arguments.delta":
            items[event.output_index]["arguments"] += event.delta
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events, [items[i] for i in sorted(items)]


def test_a_plain_answer_whole_and_streamed(server: RunningServer, client, fake) -> None:
    fake.reply("Hello there!")
    response = client.responses.create(model="default", input="Hi", instructions="Be brief.")
    assert response.status == "completed" and response.output_text == "Hello there!"
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.usage.output_tokens == len("Hello there!")
    assert fake.last.messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    ]  # fmt: skip

    fake.reply("Hello there!")
    events, items = streamed(client, input="Hi")
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.done" in kinds and "response.content_part.done" in kinds
    final = events[-1].response
    assert outline(items) == outline(final.output) == [("message", "Hello there!")]
    assert final.output_text == "Hello there!" and final.usage.output_tokens == 12


def test_thinking_is_a_reasoning_item(client, fake) -> None:
    fake.reply(THOUGHT)
    response = client.responses.create(input="Hi", reasoning={"effort": "high"})
    expected = [("reasoning", "The user greets me."), ("message", "Hello there!")]
    assert outline(response.output) == expected
    assert response.usage.output_tokens_details.reasoning_tokens == len("\nThe user greets me.\n")
    assert fake.last.options == {"enable_thinking": True}
    fake.reply(THOUGHT)
    events, items = streamed(client, input="Hi")
    assert outline(items) == outline(events[-1].response.output) == expected


def test_function_tools_whole_and_streamed(client, fake) -> None:
    expected = [("message", "Let me check."), ("get_weather", {"city": "Paris"}),
                ("get_weather", {"city": "Oslo"})]  # fmt: skip
    fake.reply(CALLS)
    response = client.responses.create(input="Weather in Paris and Oslo?", tools=[WEATHER])
    assert outline(response.output) == expected
    calls = [item for item in response.output if item.type == "function_call"]
    assert all(c.call_id.startswith("call_") and c.id.startswith("fc_") for c in calls)
    assert fake.last.options["tools"][0]["function"]["name"] == "get_weather"

    fake.reply(CALLS)
    events, items = streamed(client, input="Weather?", tools=[WEATHER])
    assert outline(items) == outline(events[-1].response.output) == expected
    fake.reply(CALLS)
    named = {"type": "function", "name": "get_weather"}
    events, items = streamed(client, input="Weather?", tools=[WEATHER], tool_choice=named)
    assert events[-1].response.tool_choice.name == "get_weather"
    assert outline(items)[1:] == expected[1:]  # held to calls: the text before them goes
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"city": "Paris"}, {"city": "Oslo"}]

    # The outputs go back as items, after the calls: one assistant turn, then tool messages.
    fake.reply("Sunny in both.")
    follow = client.responses.create(
        previous_response_id=response.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"}
               for c in calls],
    )  # fmt: skip
    assert follow.output_text == "Sunny in both."
    roles = [m["role"] for m in fake.last.messages]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in fake.last.messages[1]["tool_calls"]] == [c.call_id for c in calls]

    # Without storing: the output items go back as the SDK dumps them, with the outputs.
    fake.reply("Sunny.")
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"}
               for c in calls]  # fmt: skip
    passed_back = client.responses.create(
        store=False, tools=[WEATHER],
        input=[{"role": "user", "content": "Weather?"},
               *(item.model_dump() for item in response.output), *outputs],
    )  # fmt: skip
    assert passed_back.output_text == "Sunny."
    assert [m["role"] for m in fake.last.messages] == ["user", "assistant", "tool", "tool"]
    assert fake.last.messages[1]["content"] == "Let me check."


def test_a_conversation_continues_through_previous_response_id(client, fake) -> None:
    fake.reply("Nice to meet you, Ada.")
    first = client.responses.create(input="I am Ada.", instructions="Be kind.")
    fake.reply("You are Ada.")
    second = client.responses.create(
        input="Who am I?", previous_response_id=first.id, instructions="Be brief."
    )
    assert second.previous_response_id == first.id
    # This request's instructions come first; the earlier ones are not carried over.
    assert fake.last.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "Who am I?"},
    ]
    # A branch from the first answer sees only the first turn.
    fake.reply("Hello.")
    client.responses.create(input="Hello?", previous_response_id=first.id)
    assert [m["content"] for m in fake.last.messages] == [
        "I am Ada.", "Nice to meet you, Ada.", "Hello?",
    ]  # fmt: skip
    assert client.responses.retrieve(second.id).output_text == "You are Ada."


def test_stored_responses_belong_to_their_service(server: RunningServer, client, fake) -> None:
    fake.reply("Mine.")
    response = client.responses.create(input="Hi")
    other = server.openai("alpha")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as refused:
        other.responses.create(input="Go on", previous_response_id=response.id)
    assert refused.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    fake.reply("Not kept.")
    unstored = client.responses.create(input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_structured_output_and_limits(client, fake) -> None:
    fake.reply('{"city": "Paris"}')
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response = client.responses.create(
        input="Where?", text={"format": {"type": "json_schema", "name": "place", "schema": schema}}
    )
    assert json.loads(response.output_text) == {"city": "Paris"}
    assert fake.last.format.type == "json_schema" and fake.last.format.schema == schema

    fake.reply("A long answer that will be cut.")
    cut = client.responses.create(input="Hi", max_output_tokens=6)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "A long"


def test_logprobs_come_with_the_text(client, fake) -> None:
    fake.reply("Yes.")
    response = client.responses.create(
        input="Hi", include=["message.output_text.logprobs"], top_logprobs=1
    )
    entries = response.output[0].content[0].logprobs
    assert [e.token for e in entries] == list("Yes.")
    assert all(e.top_logprobs[0].token == e.token for e in entries)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input"),
    ({"input": "Hi", "text": {"verbosity": "high"}}, "text.verbosity"),
    ({"input": "Hi", "top_logprobs": 2}, "top_logprobs"),
    ({"input": "Hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
    ({"input": "Hi", "max_output_tokens": 100000}, "max_output_tokens"),
    ({"input": "Hi", "stream": True, "stream_options": {"include_usage": True}},
     "stream_options.include_usage"),
    ({"input": "Hi", "reasoning": {"summary": "detailed"}}, "reasoning.summary"),
    ({"input": "Hi", "frequency_penalty": 1}, "frequency_penalty"),
])  # fmt: skip
def test_bad_requests_are_openai_errors_naming_the_field(
    server: RunningServer, body: dict, param: str
) -> None:
    headers = {"Authorization": f"Bearer {server.keys['gamma']}"}
    answer = httpx.post(f"{server.api_url}/responses", json=body, headers=headers)
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"]["param"] == param


def test_history_that_does_not_fit_is_413_unless_truncation_is_auto(
    server: RunningServer, client
) -> None:
    def turn(previous: Any, **options: Any) -> Any:
        return client.responses.create(
            input="x" * 80, max_output_tokens=5, previous_response_id=previous.id, **options
        )

    previous = client.responses.create(input="x" * 80, max_output_tokens=5)
    (model,) = [m for m in server.app.state.host.models.loaded() if m.name == GAMMA.chat_model]
    full_context, model.engine.context_length = model.engine.context_length, 600
    try:
        refused = None
        for _ in range(10):  # the fake's token is a character: a turn takes about 150
            try:
                previous = turn(previous)
            except openai.APIStatusError as exc:
                refused = exc
                break
        assert refused is not None and refused.status_code == 413
        fitted = turn(previous, truncation="auto")
    finally:
        model.engine.context_length = full_context
    assert fitted.output_text == "xxxxx" and fitted.usage.input_tokens + 5 <= 600


def test_the_sdk_stream_helper_assembles_the_answer(client, fake) -> None:
    fake.reply(THOUGHT)
    with client.responses.stream(model="default", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello there!"
    assert outline(final.output) == [("reasoning", "The user greets me."),
                                     ("message", "Hello there!")]  # fmt: skip


def test_a_failure_mid_stream_ends_with_response_failed(client, fake) -> None:
    fake.reply("Hello there!")
    fake.fail(after=5)
    events = list(client.responses.create(input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    assert events[-2].code == "generation_failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "generation_failed"
    assert [item.status for item in failed.output] == ["in_progress"]  # cut off
    fake.reply("Fine again.")
    assert client.responses.create(input="Hi").output_text == "Fine again."
