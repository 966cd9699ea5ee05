"""No request field is silently ignored: every parameter of the official SDK's chat and text
completion calls is implemented, accepted because it cannot change an answer, or refused with a
400 naming it; unknown fields are refused too. And the sampling fields that are implemented
(logit_bias, presence and frequency penalties) change the answer as OpenAI's do."""

from __future__ import annotations

from typing import Any

import httpx
import mlx.core as mx
import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params

from mlx_host.engine.sampling import Penalties
from mlx_host.testing import RunningServer

ASK = [{"role": "user", "content": "Say hello."}]

#: Every chat parameter of the SDK: what it does here, and a value a caller may send.
CHAT_FIELDS: dict[str, tuple[str, Any]] = {
    "messages": ("implemented", ASK),
    "model": ("implemented", "default"),
    "max_tokens": ("implemented", 4),
    "max_completion_tokens": ("implemented", 4),
    "temperature": ("implemented", 0.5),
    "top_p": ("implemented", 0.9),
    "seed": ("implemented", 7),
    "stop": ("implemented", ["\n"]),
    "n": ("implemented", 1),
    "stream_options": ("implemented", None),  # only with stream; checked elsewhere
    "response_format": ("implemented", {"type": "json_object"}),
    "presence_penalty": ("implemented", 0.5),
    "frequency_penalty": ("implemented", 0.5),
    "logit_bias": ("implemented", {"42": 1.0}),
    "user": ("accepted", "user-1"),
    "safety_identifier": ("accepted", "hash-1"),
    "prompt_cache_key": ("accepted", "conversation-1"),
    "service_tier": ("accepted", "auto"),
    "store": ("refused", True),
    "metadata": ("refused", {"k": "v"}),
    "modalities": ("refused", ["text", "audio"]),
    "audio": ("refused", {"voice": "alloy", "format": "wav"}),
    "logprobs": ("implemented", True),
    "top_logprobs": ("implemented", 0),
    # SmolLM2's template renders no tools (test_tool_calls.py has the models that do).
    "tools": ("refused", [{"type": "function", "function": {"name": "f"}}]),
    "tool_choice": ("implemented", "none"),
    "parallel_tool_calls": ("implemented", True),
    "functions": ("refused", [{"name": "f"}]),
    "function_call": ("refused", "auto"),
    "reasoning_effort": ("refused", "low"),
    "verbosity": ("refused", "low"),
    "prediction": ("refused", {"type": "content", "content": "x"}),
    "web_search_options": ("refused", {}),
    "moderation": ("refused", {"type": "x"}),
    "prompt_cache_retention": ("refused", "24h"),
    "prompt_cache_options": ("refused", {}),
}
COMPLETION_FIELDS: dict[str, tuple[str, Any]] = {
    "prompt": ("implemented", "Once upon a time"),
    "model": ("implemented", "default"),
    "max_tokens": ("implemented", 4),
    "temperature": ("implemented", 0.5),
    "top_p": ("implemented", 0.9),
    "seed": ("implemented", 7),
    "stop": ("implemented", ["\n"]),
    "n": ("implemented", 1),
    "stream_options": ("implemented", None),
    "presence_penalty": ("implemented", 0.5),
    "frequency_penalty": ("implemented", 0.5),
    "logit_bias": ("implemented", {"42": 1.0}),
    "user": ("accepted", "user-1"),
    "best_of": ("refused", 2),
    "echo": ("refused", True),
    "logprobs": ("implemented", 2),
    "suffix": ("refused", " the end."),
}


def post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['alpha']}"}
    return httpx.post(f"{server.api_url}/{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("sdk_fields", "ours"),
    [
        (chat_create_params.CompletionCreateParamsBase.__annotations__, CHAT_FIELDS),
        (completion_create_params.CompletionCreateParamsBase.__annotations__, COMPLETION_FIELDS),
    ],
)
def test_every_sdk_parameter_has_a_decision(sdk_fields: dict[str, Any], ours: dict) -> None:
    # A parameter the SDK gains must be decided on here (implement, accept or refuse).
    assert set(sdk_fields) <= set(ours), sorted(set(sdk_fields) - set(ours))


@pytest.mark.parametrize(
    ("path", "field", "decision", "value"),
    [("chat/completions", k, *v) for k, v in CHAT_FIELDS.items() if v[1] is not None]
    + [("completions", k, *v) for k, v in COMPLETION_FIELDS.items() if v[1] is not None],
)
def test_each_parameter_works_or_is_refused_by_name(
    server: RunningServer, path: str, field: str, decision: str, value: Any
) -> None:
    base: dict[str, Any] = {"max_tokens": 4}
    base |= {"messages": ASK} if path == "chat/completions" else {"prompt": "Once upon a time"}
    response = post(server, path, base | {field: value})
    if decision == "refused":
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == field and error["code"] == "unsupported_parameter", error
        assert "not supported" in error["message"]
    else:
        assert response.status_code == 200, response.text


def test_unknown_fields_are_refused_by_name(server: RunningServer) -> None:
    chat = post(server, "chat/completions", {"messages": ASK, "temprature": 0.5})
    assert chat.status_code == 400
    assert chat.json()["error"]["param"] == "temprature"
    assert chat.json()["error"]["code"] == "unknown_parameter"
    in_message = post(
        server,
        "chat/completions",
        {"messages": [{"role": "user", "content": "x", "weight": 2}]},
    )
    assert in_message.status_code == 400
    assert in_message.json()["error"]["param"] == "messages.0.weight"
    part = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    in_part = post(server, "chat/completions", {"messages": [{"role": "user", "content": [part]}]})
    assert in_part.status_code == 400
    assert in_part.json()["error"]["param"] == "messages.0.content.0.cache_control"


def test_logit_bias_steers_every_token(server: RunningServer) -> None:
    tokenizer = server.app.state.host.models.loaded()[0].engine.tokenizer
    token = tokenizer.encode(" zebra", add_special_tokens=False)[0]
    body = {"messages": ASK, "max_tokens": 6, "temperature": 0, "logit_bias": {str(token): 100}}
    answer = post(server, "chat/completions", body).json()["choices"][0]["message"]["content"]
    assert answer.strip() == tokenizer.decode([token] * 6).strip()
    for bad, says in [({"x1": 5}, "token ids"), ({"99999999": 5}, "vocabulary"),
                      ({"1": 101}, "less than or equal to 100")]:  # fmt: skip
        refused = post(server, "chat/completions", {"messages": ASK, "logit_bias": bad})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"].startswith("logit_bias")
        assert says in refused.json()["error"]["message"]


def test_penalties_lower_tokens_already_in_the_answer() -> None:
    prompt = mx.array([5, 6, 7])
    logits = mx.zeros((1, 10))
    both = Penalties(presence=0.5, frequency=0.25, bias={3: 2.0})
    first = both(prompt, logits)  # the prompt itself is never penalized
    assert first.tolist()[0] == [0, 0, 0, 2.0, 0, 0, 0, 0, 0, 0]
    later = both(mx.array([5, 6, 7, 3, 3, 4]), logits).tolist()[0]
    assert later[3] == pytest.approx(2.0 - 0.5 - 2 * 0.25)  # twice in the answer
    assert later[4] == pytest.approx(-0.5 - 0.25)  # once
    assert later[5] == 0 and later[0] == 0  # only in the prompt, or nowhere
