"""A forced tool call on a real engine: a small random llama whose tokenizer has Hermes/Qwen's
``<tool_call>`` tokens and whose chat template renders tools. Its weights are noise, so
whatever call comes out is the grammar's doing: it must name an offered function with
arguments valid against its parameters, read by mlx-lm's own parser."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from conftest import plugin_manager

from mlx_host import ServicePolicy, ServiceSpec
from mlx_host.testing import RunningServer, run_server

AGENT = ServiceSpec(
    name="agent",
    key_prefix="agent_",
    chat_model="tiny-agent",
    policy=ServicePolicy(temperature=0.0, max_tokens=96, max_tokens_cap=200),
)
#: A Hermes-style template (the markers mlx-lm looks for to choose its json_tools parser).
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\\nTools: {{ tools | tojson }}<|im_end|>\\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message.role }}\\n"
    "{%- if message.tool_calls %}{% for tool_call in message.tool_calls %}"
    "{%- set tool_call = tool_call.function %}<tool_call>\\n"
    '{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}'
    "\\n</tool_call>{% endfor %}{% else %}{{ message.content }}{% endif %}<|im_end|>\\n"
    "{%- endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
)
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 6},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}  # fmt: skip
TOOLS = [
    {"type": "function", "function": {"name": "forecast", "parameters": CITY}},
    {"type": "function", "function": {"name": "ping",
                                      "parameters": {"type": "object", "properties": {},
                                                     "additionalProperties": False}}},
]  # fmt: skip


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, mlx_host_cache_dir: Path
) -> Iterator[RunningServer]:
    from mlx_host.engine.random_model import write_random_llama
    from mlx_host.models.sources import prepare
    from mlx_host.models.spec import EMBEDDED_SOURCE

    smollm2 = prepare(EMBEDDED_SOURCE, mlx_host_cache_dir, "quantized")
    tokenizer_dir = tmp_path_factory.mktemp("agent-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, tokenizer_dir / name)
    renames = {"<repo_name>": "<tool_call>", "<reponame>": "</tool_call>"}
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    for token in spec["added_tokens"]:
        token["content"] = renames.get(token["content"], token["content"])
    for old, new in renames.items():
        spec["model"]["vocab"][new] = spec["model"]["vocab"].pop(old)
    (tokenizer_dir / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    for entry in config.get("added_tokens_decoder", {}).values():
        entry["content"] = renames.get(entry["content"], entry["content"])
    config["chat_template"] = TEMPLATE
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
    model = write_random_llama(tmp_path_factory.mktemp("agent") / "m", tokenizer_dir)
    settings = {"models": {"tiny-agent": str(model)}}
    with run_server(settings, plugin_manager(AGENT), mlx_host_cache_dir) as running:
        yield running


def ask(server: RunningServer, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['agent']}"}
    body = {"messages": [{"role": "user", "content": "Weather in Oslo for 3 days?"}], **body}
    return httpx.post(f"{server.api_url}/chat/completions", json=body, headers=headers, timeout=120)


@pytest.mark.parametrize(("choice", "names"), [
    ("required", {"forecast", "ping"}),
    ({"type": "function", "function": {"name": "forecast"}}, {"forecast"}),
])  # fmt: skip
def test_a_forced_call_names_an_offered_function_with_valid_arguments(
    server: RunningServer, choice: object, names: set[str]
) -> None:
    response = ask(server, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False)
    assert response.status_code == 200, response.text
    choice_ = response.json()["choices"][0]
    assert choice_["finish_reason"] == "tool_calls", choice_
    (call,) = choice_["message"]["tool_calls"]
    name = call["function"]["name"]
    assert name in names
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    assert choice_["message"]["content"] is None


def test_without_a_forced_choice_noise_stays_text(server: RunningServer) -> None:
    answer = ask(server, tools=TOOLS, max_tokens=8).json()["choices"][0]
    assert answer["finish_reason"] == "length" and "tool_calls" not in answer["message"]
