"""The Responses API and Anthropic's Messages API on the real SmolLM2, with the official SDKs:
streamed answers reassemble to the whole ones (greedy decoding makes them the same text), a
stored response is continued through ``previous_response_id`` from the prompt cache on one
host and after a restart on Redis, and both APIs answer what chat completions answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import ALPHA, BETA, plugin_manager

from mlx_host.testing import RunningServer, run_server

ASK = "Name a color."


@pytest.fixture
def redis_host(redis_url: str, mlx_host_cache_dir: Path) -> Iterator[Any]:
    """Factory for servers on the shared Redis, all accepting the same keys."""
    keys: dict[str, str] = {}

    def start() -> AbstractContextManager[RunningServer]:
        settings = {"session_backend": "redis", "redis_url": redis_url}
        return run_server(settings, plugin_manager(ALPHA, BETA), mlx_host_cache_dir,
                          keys=keys or None)  # fmt: skip

    yield start, keys


def test_responses_whole_streamed_and_as_chat(server: RunningServer) -> None:
    client = server.openai("alpha")
    whole = client.responses.create(model="default", input=ASK, max_output_tokens=12)
    # Cut by max_output_tokens, it ends with response.incomplete (the SDK's stream helper
    # waits for response.completed only), so the raw events are read.
    events = list(client.responses.create(input=ASK, max_output_tokens=12, stream=True))
    pieces = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert events[-1].type == "response.incomplete" and final.status == whole.status
    chat = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": ASK}], max_tokens=12
    )
    assert whole.output_text and "".join(pieces) == final.output_text == whole.output_text
    assert whole.output_text == chat.choices[0].message.content.strip()
    assert whole.usage.input_tokens == chat.usage.prompt_tokens
    assert whole.usage.output_tokens == final.usage.output_tokens == chat.usage.completion_tokens


def test_messages_whole_streamed_and_as_chat(server: RunningServer) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key=server.keys["alpha"])
    body = {"model": "default", "max_tokens": 12, "messages": [{"role": "user", "content": ASK}]}
    whole = client.messages.create(**body)
    with client.messages.stream(**body) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    chat = server.openai("alpha").chat.completions.create(
        model="default", messages=body["messages"], max_tokens=12
    )
    text = whole.content[0].text
    assert text and "".join(pieces) == final.content[0].text == text
    assert text == chat.choices[0].message.content.strip()
    assert whole.stop_reason == final.stop_reason == "max_tokens"
    usage = whole.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == chat.usage.prompt_tokens
    counted = client.messages.count_tokens(model="default", messages=body["messages"])
    assert counted.input_tokens == chat.usage.prompt_tokens
    # A model that does not think may be asked not to.
    client.messages.create(**body, thinking={"type": "disabled"})


def test_a_stored_response_continues_from_the_cache_and_across_a_restart(
    redis_host: Any,
) -> None:
    start, keys = redis_host
    with start() as first:
        keys.update(first.keys)
        client = first.openai("alpha")
        opening = client.responses.create(input="My name is Ada.", max_output_tokens=8)
        follow = client.responses.create(
            input="What is my name?", previous_response_id=opening.id, max_output_tokens=8
        )
        # The conversation so far is a prefix of the new prompt: the prompt cache serves it.
        assert follow.usage.input_tokens > opening.usage.input_tokens
        assert follow.usage.input_tokens_details.cached_tokens >= opening.usage.input_tokens
    with start() as restarted:
        client = restarted.openai("alpha")
        assert client.responses.retrieve(follow.id).output_text == follow.output_text
        again = client.responses.create(
            input="What is my name?", previous_response_id=opening.id, max_output_tokens=8
        )
        assert again.usage.input_tokens == follow.usage.input_tokens  # the same conversation
        assert again.output_text == follow.output_text  # greedy: the same answer
        with pytest.raises(Exception, match=r"404|No response"):
            restarted.openai("beta").responses.retrieve(follow.id)
