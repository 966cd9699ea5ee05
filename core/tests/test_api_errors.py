"""Bad input gets an OpenAI-shaped error with the right status, and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

from mlx_host.app import ANTHROPIC_PATHS
from mlx_host.testing import RunningServer


def post(server: RunningServer, body: object, key: str | None = "alpha") -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys[key]}"} if key else {}
    url = f"{server.url}/api/v1/chat/completions"
    return httpx.post(url, headers=headers, json=body, timeout=60)


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_missing_key_is_401(server: RunningServer) -> None:
    error = assert_error(post(server, {"messages": []}, key=None), 401, "authentication_error")
    assert error["code"] == "missing_api_key"


def test_unknown_key_is_401_in_sdk(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.api_url, api_key="alpha_not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.body["code"] == "invalid_api_key"


def test_model_not_allowed_is_403(server: RunningServer) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        server.openai("alpha").chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["code"] == "model_not_allowed"


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": HI, "max_tokens": "many"}, "max_tokens"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "max_tokens": True}, "max_tokens"),
        ({"messages": HI, "max_tokens": 5.5}, "max_tokens"),
        ({"messages": HI, "temperature": 9}, "temperature"),
        ({"messages": HI, "temperature": "hot"}, "temperature"),
        ({"messages": HI, "top_p": 0}, "top_p"),
        ({"messages": HI, "seed": 2**63}, "seed"),
        ({"messages": HI, "seed": -(2**63) - 1}, "seed"),
        ({"messages": HI, "seed": 1.5}, "seed"),
        ({"messages": HI, "n": 3}, "n"),
        ({"messages": "hello"}, "messages"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(
    server: RunningServer, body: dict, param: str
) -> None:
    error = assert_error(post(server, body), 400, "invalid_request_error")
    assert error["param"] == param
    assert param.split(".")[0] in error["message"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_are_400(server: RunningServer, literal: bytes) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {server.keys['alpha']}",
                 "Content-Type": "application/json"},
        content=b'{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + literal
        + b"}",
    )  # fmt: skip
    assert assert_error(response, 400, "invalid_request_error")["param"] == "temperature"


def test_negative_seed_is_used_not_fatal(server: RunningServer) -> None:
    """A seed anywhere in OpenAI's signed 64-bit range samples repeatably (a negative seed
    once killed the model's worker, and with it every service's requests)."""
    body = {"messages": [{"role": "user", "content": "Name a bird."}], "max_tokens": 6,
            "temperature": 1, "seed": -1}  # fmt: skip
    first, again = post(server, body), post(server, body)
    assert first.status_code == 200, first.text
    assert (
        first.json()["choices"][0]["message"]["content"]
        == (again.json()["choices"][0]["message"]["content"])
    )
    for seed in (-(2**63), 2**63 - 1):
        assert post(server, {**body, "seed": seed}).status_code == 200


def test_empty_prompt_is_400_without_internals(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.api_url}/completions",
        headers={"Authorization": f"Bearer {server.keys['alpha']}"},
        json={"prompt": "", "max_tokens": 3},
    )
    error = assert_error(response, 400, "invalid_request_error")
    assert error["param"] == "prompt" and "Sequence" not in error["message"]


def test_unknown_model_is_404(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        server.openai("alpha").chat.completions.create(model="gpt-17", messages=HI)
    assert caught.value.body["code"] == "model_not_found"


def test_an_alias_is_the_model_it_names(server: RunningServer) -> None:
    """``smollm2`` is listed as an alias of alpha's default: the allow-list accepts it."""
    reply = server.openai("alpha").chat.completions.create(
        model="smollm2", messages=HI, max_tokens=2
    )
    assert reply.model == "smollm2-135m-instruct"


def test_openapi_documents_every_error_status_with_the_error_schema(
    server: RunningServer,
) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "429", "500", "503"} <= set(chat)
    for path, operations in schema["paths"].items():
        # Anthropic's Messages API answers errors in Anthropic's shape.
        shape = "AnthropicErrorResponse" if path in ANTHROPIC_PATHS else "ErrorResponse"
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    content = response["content"]["application/json"]["schema"]
                    expected = {"$ref": f"#/components/schemas/{shape}"}
                    assert content == expected, (method, path, status)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_over_the_cap_is_400_naming_the_field(server: RunningServer, field: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], field: 100_000}
    error = assert_error(post(server, body), 400, "invalid_request_error")
    assert "cap" in error["message"] and error["param"] == field


def test_image_content_is_400(server: RunningServer) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:,"}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    assert_error(post(server, body), 400, "invalid_request_error")


def test_huge_body_is_413(server: RunningServer) -> None:
    huge = "x" * (server.app.state.host.settings.max_request_bytes + 1)
    body = {"messages": [{"role": "user", "content": huge}]}
    error = assert_error(post(server, body), 413, "invalid_request_error")
    assert error["code"] == "request_too_large"


def test_prompt_longer_than_context_is_413(server: RunningServer) -> None:
    long = "word " * 9000  # SmolLM2's context is 8192 tokens
    body = {"messages": [{"role": "user", "content": long}], "max_tokens": 5}
    assert "context" in assert_error(post(server, body), 413, "invalid_request_error")["message"]


def test_unknown_route_is_404_json(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/v1/nothing-here")
    assert_error(response, 404, "not_found_error")


def test_server_still_answers_after_bad_requests(server: RunningServer) -> None:
    body = {"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4}
    assert post(server, body).status_code == 200
