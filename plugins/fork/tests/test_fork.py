"""The fork service: its default and the models it may ask for instead."""

import openai
import pytest

from mlx_host.testing import RunningServer, installed_services
from mlx_host_fork.plugin import SERVICE


def test_fork_is_discovered() -> None:
    found = installed_services()["fork"]
    assert found.spec is SERVICE and found.spec.key_prefix == "fork_"


def test_fork_may_ask_for_an_allowed_model(mlx_host_server: RunningServer) -> None:
    reply = mlx_host_server.openai("fork").chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Write a Python function that adds two numbers."}],
        max_tokens=48,
    )
    assert "def " in reply.choices[0].message.content


def test_fork_gets_404_for_a_model_the_server_lacks(mlx_host_server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError):
        mlx_host_server.openai("fork").chat.completions.create(
            model="phi-3", messages=[{"role": "user", "content": "x"}]
        )
