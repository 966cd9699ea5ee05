"""Tool calls on the fake engine, which writes them in two of mlx-lm's formats (Hermes/Qwen's
``<tool_call>`` JSON; Mistral's ``[TOOL_CALLS]``) read by mlx-lm's own parsers: parsed whole
and streamed (the fake streams a character per token, so chunks cut the markup everywhere),
offered to the template, carried in the history and in sessions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.api.tool_calls import ToolCallReader
from mlx_host.engine.tool_formats import named
from mlx_host.testing import RunningServer, run_server

TOOLY = ServiceSpec(
    name="tooly",
    key_prefix="tooly_",
    chat_model="smollm2-135m-instruct",
    policy=ServicePolicy(max_tokens=400, max_tokens_cap=1000, allowed_models=("*",)),
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
HERMES = (
    'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    "</tool_call>"
)
MISTRAL = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    settings = {"models": {"mistral-small": "/models/mistral-small"}}  # the fake reads none
    pm = plugin_manager(TOOLY)
    with run_server(settings, pm, mlx_host_cache_dir, fake=True) as running:
        yield running


def post(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['tooly']}"}
    return httpx.post(f"{server.api_url}/chat/completions", json=body, headers=headers)


def calls_of(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message["tool_calls"]]  # fmt: skip


def test_the_reader_finds_calls_wherever_the_chunks_cut_them() -> None:
    for cut in range(len(HERMES) + 1):
        reader = ToolCallReader(named("json_tools"), [WEATHER])
        text1, calls1 = reader.feed(HERMES[:cut])
        text2, calls2 = reader.feed(HERMES[cut:], final=True)
        assert text1 + text2 == "Let me check.\n", cut
        assert [(c.name, json.loads(c.arguments)) for c in calls1 + calls2] == [
            ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"}),
        ]  # fmt: skip


@pytest.mark.parametrize(("model", "reply", "text", "expected"), [
    ("default", HERMES, "Let me check.",
     [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]),
    ("mistral-small", MISTRAL, None, [("get_weather", {"city": "Paris"})]),
])  # fmt: skip
def test_calls_are_parsed_whole_and_streamed(
    server: RunningServer, fake, model: str, reply: str, text: str | None, expected: list
) -> None:
    fake.reply(reply)
    answer = post(server, {"model": model, "messages": ASK, "tools": [WEATHER]}).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == text and calls_of(choice["message"]) == expected
    assert fake.last.options["tools"] == [WEATHER]  # the template renders the tools

    fake.reply(reply)
    stream = server.openai("tooly").chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER], stream=True
    )
    content, calls, finish = [], {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(content).strip() == (text or "")
    assert "[TOOL" not in "".join(content) and "<tool" not in "".join(content)
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == expected
    assert finish == "tool_calls"


def test_a_call_that_cannot_be_read_stays_text(server: RunningServer, fake) -> None:
    fake.reply("<tool_call>not json</tool_call>")
    choice = post(server, {"messages": ASK, "tools": [WEATHER]}).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "<tool_call>not json</tool_call>"


def test_tool_choice_none_offers_no_tools(server: RunningServer, fake) -> None:
    fake.reply(HERMES)
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"}
    choice = post(server, body).json()["choices"][0]
    assert choice["message"]["content"] == HERMES and choice["finish_reason"] == "stop"
    assert not (fake.last.options or {}).get("tools")


def test_history_with_tool_calls_reaches_the_template(server: RunningServer, fake) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    fake.reply("It is 18 C and sunny in Paris.")
    choice = post(server, {"messages": history, "tools": [WEATHER]}).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    rendered = fake.last.messages
    assert rendered[-2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert rendered[-1] == {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"}


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
       "function": {"name": "f", "arguments": "not json"}}]}], "messages.0.tool_calls"),
    ([{"role": "tool", "content": "x"}], "messages.0"),
    ([{"role": "user", "content": "x", "tool_call_id": "c"}], "messages.0"),
])  # fmt: skip
def test_bad_tool_messages_get_400(server: RunningServer, messages: list, param: str) -> None:
    response = post(server, {"messages": messages})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(("choice", "parallel", "allowed"), [
    ("required", None, ["get_weather", "get_time"]),
    ({"type": "function", "function": {"name": "get_time"}}, False, ["get_time"]),
])  # fmt: skip
def test_a_forced_tool_choice_is_held_by_a_grammar(
    server: RunningServer, fake, choice: Any, parallel: bool | None, allowed: list[str]
) -> None:
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    body = {"messages": ASK, "tools": [WEATHER, clock], "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    fake.reply('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    answer = post(server, body).json()
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    held = fake.last.format
    assert held.type == "grammar"
    for name in ("get_weather", "get_time"):
        # Each offered function is a rule of the grammar, its name written as JSON text.
        assert (f'\\"name\\": \\"{name}\\"' in held.grammar) == (name in allowed)
    assert ('("\\n" call)*' in held.grammar) == (parallel is not False)  # more calls?


@pytest.mark.parametrize(("model", "body", "param"), [
    ("default", {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ("default", {"tool_choice": "required", "response_format": {"type": "json_object"}},
     "response_format"),
    ("default", {"parallel_tool_calls": False}, "parallel_tool_calls"),
    ("mistral-small", {"tool_choice": "required"}, "tool_choice"),
    ("default", {"tools": [{**WEATHER, "function": {**WEATHER["function"], "strict": True}}]},
     "tools.0.function.strict"),
])  # fmt: skip
def test_tool_choices_that_cannot_be_held_are_refused(
    server: RunningServer, model: str, body: dict, param: str
) -> None:
    response = post(server, {"model": model, "messages": ASK, "tools": [WEATHER], **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    no_tools = post(server, {"messages": ASK, "tool_choice": "required"})
    assert no_tools.status_code == 400 and no_tools.json()["error"]["param"] == "tool_choice"


def test_sessions_keep_tool_calls_and_results(server: RunningServer, fake) -> None:
    headers = {"Authorization": f"Bearer {server.keys['tooly']}"}
    session = httpx.post(f"{server.api_url}/sessions", headers=headers, json={}).json()
    fake.reply(HERMES)
    first = post(server, {"messages": ASK, "tools": [WEATHER], "session_id": session["id"]})
    calls = first.json()["choices"][0]["message"]["tool_calls"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "cold"} for c in calls]
    fake.reply("Both are cold.")
    post(server, {"messages": results, "tools": [WEATHER], "session_id": session["id"]})
    rendered = fake.last.messages
    assistant = next(m for m in rendered if m["role"] == "assistant")
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Oslo"},
    ]  # fmt: skip
    url = f"{server.api_url}/sessions/{session['id']}/messages"
    stored = httpx.get(url, headers=headers).json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def test_arguments_written_as_a_string_are_read_and_others_stay_text(
    server: RunningServer, fake
) -> None:
    as_string = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Paris"})})
    fake.reply(f"<tool_call>{as_string}</tool_call>")
    message = post(server, {"messages": ASK, "tools": [WEATHER]}).json()["choices"][0]["message"]
    assert calls_of(message) == [("get_weather", {"city": "Paris"})]
    not_an_object = '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>'
    fake.reply(not_an_object)
    message = post(server, {"messages": ASK, "tools": [WEATHER]}).json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"] == not_an_object


def test_an_unreadable_call_is_not_logged(
    server: RunningServer, fake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mlx_host")
    fake.reply("[TOOL_CALLS]my-secret-answer f[ARGS]{broken")
    answer = post(server, {"model": "mistral-small", "messages": ASK, "tools": [WEATHER]})
    assert "my-secret-answer" in answer.json()["choices"][0]["message"]["content"]
    assert "could not be read" in caplog.text and "my-secret-answer" not in caplog.text
