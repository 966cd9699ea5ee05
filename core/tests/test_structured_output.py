"""Structured output on the real SmolLM2: every answer held to its schema while decoding, in a
batch shared with free requests, streamed or whole, and schemas that cannot be enforced
refused before anything is generated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from conftest import ALPHA, plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.engine.grammar import Constraint
from mlx_host.testing import RunningServer, run_server

JSON_FIRST = ServiceSpec(
    name="data",
    key_prefix="data_",
    chat_model="smollm2-135m-instruct",
    completion_model="smollm2-135m-instruct",
    policy=ServicePolicy(temperature=0.0, max_tokens=96, response_format="json_object"),
)
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
#: Varied prompts and schemas: strings, integers with bounds, enums, booleans, arrays with
#: sizes, nesting, patterns and optional fields. Every string, number and array is bounded,
#: so that each answer fits MAX_TOKENS whatever the model prefers: a "stop" is owed by the
#: grammar, not by the model's taste (which may differ between machines).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("Ann is 31 years old.", PERSON),
    ("Name three fruits.", {
        "type": "object",
        "properties": {"fruits": {"type": "array", "items": {"type": "string", "maxLength": 20},
                                  "minItems": 3, "maxItems": 3}},
        "required": ["fruits"], "additionalProperties": False,
    }),
    ("Is the sky blue? Answer with a verdict and a colour.", {
        "type": "object",
        "properties": {"verdict": {"type": "boolean"},
                       "colour": {"enum": ["blue", "grey", "black"]}},
        "required": ["verdict", "colour"], "additionalProperties": False,
    }),
    ("Give the address of a bakery in Paris.", {
        "type": "object",
        "properties": {"shop": {"type": "string", "maxLength": 30}, "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"], "additionalProperties": False,
        }},
        "required": ["shop", "address"], "additionalProperties": False,
    }),
    ("Rate the film Up from 1 to 5 and say why.", {
        "type": "object",
        "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5},
                       "why": {"type": "string", "maxLength": 80}},
        "required": ["stars", "why"], "additionalProperties": False,
    }),
    ("Two people: Ann (31) and Bob (45).", {
        "type": "object",
        "properties": {"people": {"type": "array", "items": PERSON, "maxItems": 2}},
        "required": ["people"], "additionalProperties": False,
    }),
    ("What is 7 times 6?", {
        "type": "object",
        "properties": {"answer": {"type": "integer", "minimum": -1000, "maximum": 1000},
                       "unit": {"type": ["string", "null"], "maxLength": 10}},
        "required": ["answer"], "additionalProperties": False,
    }),
    ("Tag this sentence: the cat sat on the mat.", {
        "type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4,
    }),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(mlx_host_cache_dir: Path) -> Iterator[RunningServer]:
    with run_server({}, plugin_manager(ALPHA, JSON_FIRST), mlx_host_cache_dir) as running:
        yield running


def schema_format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


MAX_TOKENS = 200


def ask(server: RunningServer, prompt: str, schema: dict[str, Any] | None, **kw: Any) -> Any:
    extra: dict[str, Any] = {"response_format": schema_format(schema)} if schema else {}
    return server.openai("alpha").chat.completions.create(
        model="default", messages=[{"role": "user", "content": prompt}],
        max_tokens=kw.pop("max_tokens", MAX_TOKENS), **extra, **kw,
    )  # fmt: skip


def is_json_object_or_its_start(reply: Any) -> bool:
    """Any JSON object is unbounded: a small model may ramble until max_tokens, but what it
    wrote is a JSON object, or the start of one when cut."""
    choice = reply.choices[0]
    text = choice.message.content
    if choice.finish_reason == "length":
        return text.startswith("{")
    return isinstance(json.loads(text), dict)


def test_every_answer_of_a_mixed_batch_validates(server: RunningServer) -> None:
    """The constrained requests share the batch with free ones (all sent at once)."""
    free = [("Write one sentence about the sea.", None)] * 4
    with ThreadPoolExecutor(len(CASES) + len(free)) as pool:
        replies = list(pool.map(lambda case: ask(server, *case), [*CASES, *free]))
    for (prompt, schema), reply in zip(CASES, replies, strict=False):
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", (prompt, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)
    for reply in replies[len(CASES) :]:
        assert reply.choices[0].message.content.strip()  # free text, unconstrained


def test_a_streamed_answer_validates(server: RunningServer) -> None:
    stream = ask(server, "Ann is 31 years old.", PERSON, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3  # token by token, not at once
    jsonschema.validate(json.loads("".join(pieces)), PERSON)


def test_an_answer_cut_by_max_tokens_says_so(server: RunningServer) -> None:
    reply = ask(server, "Ann is 31 years old.", PERSON, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content)


def test_the_sdk_parses_into_a_pydantic_model(server: RunningServer) -> None:
    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=30)
        country: str = Field(max_length=30)

    # Bounded fields, and room for them even if every character were a token of its own.
    reply = server.openai("alpha").chat.completions.parse(
        model="default", response_format=City, max_tokens=96,
        messages=[{"role": "user", "content": "Paris is the capital of France."}],
    )  # fmt: skip
    assert isinstance(reply.choices[0].message.parsed, City)


def test_json_object_and_completions(server: RunningServer) -> None:
    client = server.openai("alpha")
    reply = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Tell me about cats."}],
        response_format={"type": "json_object"}, max_tokens=64,
    )  # fmt: skip
    assert is_json_object_or_its_start(reply), reply.choices[0].message.content
    text = client.completions.create(
        model="default", prompt="A person as JSON:", max_tokens=MAX_TOKENS,
        extra_body={"response_format": schema_format(PERSON)},
    ).choices[0]  # fmt: skip
    assert text.finish_reason == "stop"
    jsonschema.validate(json.loads(text.text), PERSON)


def test_a_service_may_answer_json_by_default(server: RunningServer) -> None:
    client = server.openai("data")
    ask_data = {"model": "default", "messages": [{"role": "user", "content": "Describe a dog."}]}
    reply = client.chat.completions.create(**ask_data)
    assert is_json_object_or_its_start(reply), reply.choices[0].message.content
    text = client.chat.completions.create(**ask_data, response_format={"type": "text"})
    assert not text.choices[0].message.content.startswith("{")  # the request's choice wins


@pytest.mark.parametrize(
    ("response_format", "says"),
    [
        (schema_format({"type": "object", "if": {"type": "object"}}), "Unimplemented keys"),
        (schema_format({"type": "strin"}), "strin"),
        ({"type": "json_schema"}, "json_schema is required"),
        ({"type": "json_object", "json_schema": {"name": "x", "schema": {}}}, "only then"),
        (schema_format(PERSON, name="has spaces"), "name"),
        ({"type": "xml"}, "type"),
        # A schema may not make the grammar lenient, nor make the server fetch a document.
        (
            schema_format({"type": "array", "uniqueItems": True, "x-guidance": {"lenient": True}}),
            "uniqueItems",
        ),
        (schema_format({"type": "object", "$ref": "http://127.0.0.1:9/x"}), "outside the schema"),
        ({"type": "json_object", "strict": True}, "unknown parameter"),
    ],
)
def test_schemas_that_cannot_be_enforced_get_400(
    server: RunningServer, response_format: dict[str, Any], says: str
) -> None:
    response = httpx.post(
        f"{server.api_url}/chat/completions",
        headers={"Authorization": f"Bearer {server.keys['alpha']}"},
        json={"messages": [{"role": "user", "content": "hi"}], "response_format": response_format},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith("response_format") and says in error["message"], error


def test_a_grammar_that_fails_mid_answer_fails_its_request_only(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[int, int] = {}
    allowed = Constraint._allowed

    def failing_after_three_tokens(self: Constraint, width: int) -> Any:
        calls[id(self)] = calls.get(id(self), 0) + 1
        if calls[id(self)] > 3:
            raise RuntimeError("matcher state at 0xdeadbeef is corrupt")
        return allowed(self, width)

    monkeypatch.setattr(Constraint, "_allowed", failing_after_three_tokens)
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}

    def chat(schema: dict[str, Any] | None) -> httpx.Response:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "Ann is 31."}],
                                "max_tokens": 24}  # fmt: skip
        if schema:
            body["response_format"] = schema_format(schema)
        return httpx.post(
            f"{server.api_url}/chat/completions", json=body, headers=headers, timeout=120
        )

    with ThreadPoolExecutor(3) as pool:
        failed, free, other_free = pool.map(chat, [PERSON, None, None])
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    assert error["code"] == "generation_failed" and "deadbeef" not in failed.text
    assert free.status_code == other_free.status_code == 200
    monkeypatch.undo()
    assert chat(PERSON).status_code == 200  # the model serves constrained requests again
