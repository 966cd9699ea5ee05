"""Bad input gets an OpenAI-shaped error with the right status, and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

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


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
        ({"messages": "hello"}, "messages"),
    ],
)
def test_invalid_bodies_are_422(server: RunningServer, body: dict, param: str) -> None:
    error = assert_error(post(server, body), 422, "invalid_request_error")
    assert error["param"] == param


def test_malformed_json_is_422(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/chat/completions",
        headers={
            "Authorization": f"Bearer {server.keys['alpha']}",
            "Content-Type": "application/json",
        },
        content=b'{"messages": [',
    )
    assert assert_error(response, 422, "invalid_request_error")["code"] == "invalid_json"


def test_max_tokens_over_the_cap_is_400(server: RunningServer) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    error = assert_error(post(server, body), 400, "invalid_request_error")
    assert "cap" in error["message"]


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
