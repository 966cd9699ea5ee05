"""The anydatanext service: data output that parses, embeddings, and extraction against a
schema, checked on the fake engines (what the service asks of them, and what it does with
their answers)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from mlx_host.testing import RunningServer, check_service_policy, installed_services
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
    assert body["usage"]["completion_tokens"] == len('{"name": "Ann Smith", "age": 31}')
    call = mlx_host_fake_server.fake.last
    assert call.format.type == "json_schema" and call.format.schema == PERSON
    asked = call.messages[-1]["content"]
    assert TEXT in asked and json.dumps(PERSON) in asked
    assert "no commentary" in call.messages[0]["content"]  # the service's policy applies


@pytest.mark.parametrize(
    ("reply", "max_tokens", "says", "path"),
    [
        ('{"name": "Ann"}', None, "'age' is a required property", "$"),
        ('{"name": "Ann", "age": -4}', None, "less than the minimum of 0", "$.age"),
        ('{"name": "Ann", "age": 31}', 10, "cut after 10 tokens", "$"),
        ("Ann is 31", None, "Expecting value", "$"),
    ],
)
def test_an_answer_that_misses_the_schema_is_422_with_details(
    mlx_host_fake_server: RunningServer, reply: str, max_tokens: int | None, says: str, path: str
) -> None:
    mlx_host_fake_server.fake.reply(reply)
    body = {"text": TEXT, "schema": PERSON, "max_tokens": max_tokens}
    response = extract(mlx_host_fake_server, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "schema_not_satisfied"
    assert any(d["path"] == path and says in d["message"] for d in error["details"]), error


def test_bad_extraction_requests_get_400(mlx_host_fake_server: RunningServer) -> None:
    bad_schema = extract(mlx_host_fake_server, {"text": TEXT, "schema": {"type": "strin"}})
    assert bad_schema.status_code == 400 and bad_schema.json()["error"]["param"] == "schema"
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
