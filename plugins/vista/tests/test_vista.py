"""The vista service: discovered from its entry point, its policy applied to real requests."""

import openai
import pytest

from mlx_host.testing import RunningServer, installed_services
from mlx_host_vista.plugin import SERVICE


def test_vista_is_discovered() -> None:
    found = installed_services()["vista"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-vista"


def test_vista_system_prompt_is_applied(mlx_host_server: RunningServer) -> None:
    client = mlx_host_server.openai("vista")
    question = {"role": "user", "content": "Is chocolate toxic to dogs?"}
    own = client.chat.completions.create(
        model="default", messages=[{"role": "system", "content": "Hi."}, question], max_tokens=1
    )
    policy = client.chat.completions.create(model="default", messages=[question], max_tokens=1)
    assert policy.usage.prompt_tokens > own.usage.prompt_tokens + 15


def test_vista_caps_max_tokens(mlx_host_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError, match="cap"):
        mlx_host_server.openai("vista").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], max_tokens=5000
        )
