"""The anydatanext service: data output that parses, embeddings, and extraction against a
schema, checked on the fake engines (what the service asks of them, and what it does with
their answers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from mlx_host import InvalidRequestError
from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_anydatanext.extract import _check, _validator
from mlx_host_anydatanext.plugin import SERVICE

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
TEXT = "Ann Smith, who turned 31 last week, runs the bakery."


def extract(server: RunningServer, body: dict[str, Any], service: str = "anydatanext") -> Any:
    headers = {"Authorization": f"Bearer {server.keys[service]}"}
    url = f"{server.url}/api/v1/anydatanext/extract"
    return httpx.post(url, json=body, headers=headers, timeout=60)


def test_anydatanext_is_discovered() -> None:
    found = installed_services()["anydatanext"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-anydatanext"


def test_anydatanext_outputs_only_data_as_json(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "no commentary" in call.messages[0]["content"]
    assert call.params.temperature == 0.0
    # JSON by default, enforced by the engine; a request may still ask for text.
    assert call.format is not None and call.format.type == "json_object"
    client = mlx_host_fake_server.openai("anydatanext")
    ask = {"model": "default", "messages": [{"role": "user", "content": "x"}]}
    client.chat.completions.create(**ask, response_format={"type": "text"})
    assert mlx_host_fake_server.fake.last.format is None
    schema = {"name": "person", "schema": PERSON, "strict": True}
    client.chat.completions.create(**ask, response_format={"type": "json_schema",
                                                           "json_schema": schema})  # fmt: skip
    held_to = mlx_host_fake_server.fake.last.format
    assert held_to.type == "json_schema" and held_to.schema == PERSON


def test_anydatanext_may_use_every_model(mlx_host_fake_server: RunningServer) -> None:
    ids = [m.id for m in mlx_host_fake_server.openai("anydatanext").models.list()]
    assert ids[0] == SERVICE.chat_model and "smollm2-135m-instruct" in ids
    mlx_host_fake_server.openai("anydatanext").chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "x"}]
    )
    assert mlx_host_fake_server.fake.last.model == "smollm2-135m-instruct"


def test_extraction_returns_validated_data(mlx_host_fake_server: RunningServer) -> None:
    mlx_host_fake_server.fake.reply('{"name": "Ann Smith", "age": 31}')
    response = extract(mlx_host_fake_server, {"text": TEXT, "schema": PERSON})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == {"name": "Ann Smith", "age": 31} and body["object"] == "extraction"
    assert body["model"] == mlx_host_fake_server.fake.last.served_by  # who really answered
    assert body["usage"]["completion_tokens"] == len('{"name": "Ann Smith", "age": 31}')
    call = mlx_host_fake_server.fake.last
    assert call.format.type == "json_schema" and call.format.schema == PERSON
    asked = call.messages[-1]["content"]
    assert TEXT in asked and json.dumps(PERSON) in asked
    assert "no commentary" in call.messages[0]["content"]  # the service's policy applies


@pytest.mark.parametrize(
    ("reply", "max_tokens", "why", "says", "path"),
    [
        ('{"name": "Ann"}', None, "breaks 1 rule", "'age' is a required property", "$"),
        ('{"name": "Ann", "age": -4}', None, "breaks 1 rule", "less than the minimum", "$.age"),
        ('{"name": "Ann", "age": 31}', 10, "cut by max_tokens after 10", "Unterminated", "$"),
        ("Ann is 31", None, "not JSON", "Expecting value", "$"),
    ],
)
def test_an_answer_that_misses_the_schema_is_422_with_details(
    mlx_host_fake_server: RunningServer,
    reply: str, max_tokens: int | None, why: str, says: str, path: str,
) -> None:  # fmt: skip
    mlx_host_fake_server.fake.reply(reply)
    body = {"text": TEXT, "schema": PERSON, "max_tokens": max_tokens}
    response = extract(mlx_host_fake_server, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "schema_not_satisfied" and why in error["message"], error
    assert any(d["path"] == path and says in d["message"] for d in error["details"]), error


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "strin"}, "not a valid JSON Schema"),
        ({"$schema": {}, "type": "object"}, "$schema must be a URI"),
        ({"type": "array", "uniqueItems": True}, "Unimplemented keys"),
        # A schema may not make the grammar lenient, nor make the server fetch a document.
        ({"type": "array", "uniqueItems": True, "x-guidance": {"lenient": True}}, "uniqueItems"),
        ({"type": "object", "$ref": "http://127.0.0.1:9/secret"}, "outside the schema"),
        ({"type": "object", "$ref": "file:///etc/passwd"}, "outside the schema"),
    ],
)
def test_schemas_that_cannot_be_enforced_get_400(
    mlx_host_fake_server: RunningServer, schema: dict[str, Any], says: str
) -> None:
    response = extract(mlx_host_fake_server, {"text": TEXT, "schema": schema})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "schema" and says in error["message"], error
    assert "\n" not in error["message"]
    assert not mlx_host_fake_server.fake.requests  # refused before anything was generated


def test_the_validator_never_fetches_a_referenced_document() -> None:
    # Defence in depth: the grammar refuses such schemas first, but the validator alone must
    # not fetch them either (a fetched document's contents would come back in details).
    validator = _validator({"$ref": "http://127.0.0.1:9/secret"})
    with pytest.raises(InvalidRequestError, match="outside itself"):
        _check(validator, "{}")


def test_bad_extraction_requests_get_400(mlx_host_fake_server: RunningServer) -> None:
    empty = extract(mlx_host_fake_server, {"text": "", "schema": PERSON})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "text"
    extra = extract(mlx_host_fake_server, {"text": TEXT, "schema": PERSON, "temperature": 1})
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "temperature"
    assert not mlx_host_fake_server.fake.requests


def test_extraction_needs_a_key(mlx_host_fake_server: RunningServer) -> None:
    url = f"{mlx_host_fake_server.url}/api/v1/anydatanext/extract"
    response = httpx.post(url, json={"text": TEXT, "schema": PERSON})
    assert response.status_code == 401, response.text
    assert not mlx_host_fake_server.fake.requests


def test_embeddings_come_from_the_service_model(mlx_host_fake_server: RunningServer) -> None:
    client = mlx_host_fake_server.openai("anydatanext")
    texts = ["cheese and bread", "bread and cheese", "12 34 56"]
    response = client.embeddings.create(input=texts, model="default")
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 32) and response.model == SERVICE.embedding_model
    assert vectors[0] @ vectors[1] > 0.99 > vectors[0] @ vectors[2]
    call = mlx_host_fake_server.fake.last
    assert call.service == "anydatanext" and call.inputs == texts
    # Shorter vectors where the model allows them: cut, then renormalized.
    short = client.embeddings.create(input=texts[:1], model="default", dimensions=8)
    cut = np.array(short.data[0].embedding)
    assert cut.shape == (8,) and np.isclose(np.linalg.norm(cut), 1)
    assert np.allclose(cut, vectors[0, :8] / np.linalg.norm(vectors[0, :8]), atol=1e-6)
    too_many = httpx.post(
        f"{mlx_host_fake_server.url}/v1/embeddings",
        json={"input": "x", "dimensions": 64},
        headers={"Authorization": f"Bearer {mlx_host_fake_server.keys['anydatanext']}"},
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"


def test_json_by_default_gives_way_to_tools(mlx_host_fake_server: RunningServer) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    mlx_host_fake_server.openai("anydatanext").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}], tools=[tool]
    )
    # A JSON grammar would forbid the markup of the tool calls the model may write.
    assert mlx_host_fake_server.fake.last.format is None
