"""The fork service: code-minded defaults, and the models it may ask for instead."""

import openai
import pytest

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_fork.plugin import SERVICE


def test_fork_is_discovered() -> None:
    found = installed_services()["fork"]
    assert found.spec is SERVICE and found.spec.key_prefix == "fork_"


def test_fork_answers_with_code_at_a_low_temperature(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert call.model == "deepseek-coder" and "code" in call.messages[0]["content"]
    assert call.params.temperature <= 0.2


def test_fork_completes_code_with_its_default(mlx_host_fake_server: RunningServer) -> None:
    mlx_host_fake_server.openai("fork").completions.create(
        model="default", prompt="def add(a, b):", max_tokens=8
    )
    call = mlx_host_fake_server.fake.last
    assert (call.capability, call.model, call.prompt) == ("completion", "deepseek-coder",
                                                          "def add(a, b):")  # fmt: skip


def test_fork_may_ask_for_an_allowed_model(mlx_host_fake_server: RunningServer) -> None:
    # qwen3-14b is allowed too, but only known where a service or setting declares it.
    mlx_host_fake_server.openai("fork").chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}]
    )
    assert mlx_host_fake_server.fake.last.model == "smollm2-135m-instruct"


def test_fork_gets_404_for_a_model_the_server_lacks(mlx_host_fake_server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError):
        mlx_host_fake_server.openai("fork").chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )


def test_fork_fills_in_the_middle_and_stops_at_blank_lines(
    mlx_host_fake_server: RunningServer,
) -> None:
    fake = mlx_host_fake_server.fake
    fake.reply("a + b\n\n\ndef unrelated():")
    answer = mlx_host_fake_server.openai("fork").completions.create(
        model="default", prompt="def add(a, b):\n    return ", suffix="\n", max_tokens=40
    )
    assert answer.choices[0].text == "a + b"  # the completion stop of fork's policy
    assert fake.last.params.stop == ("\n\n\n",)
    assert fake.last.prompt.startswith("<fim_prefix>def add")  # the fake's FIM format
    # A request's own stop wins; chat has none by default.
    mlx_host_fake_server.openai("fork").completions.create(
        model="default", prompt="x", stop=["END"], max_tokens=4
    )
    assert fake.last.params.stop == ("END",)
    mlx_host_fake_server.openai("fork").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}]
    )
    assert fake.last.params.stop == ()
