"""The vista service: discovered from its entry point, its policy reaching the engine."""

import openai
import pytest

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_vista.plugin import SERVICE


def test_vista_is_discovered() -> None:
    found = installed_services()["vista"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-vista"


def test_vista_asks_for_careful_reproducible_answers(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "never invent doses" in call.messages[0]["content"]
    assert call.params.temperature <= 0.3


def test_a_callers_own_system_message_replaces_vistas(mlx_host_fake_server: RunningServer) -> None:
    own = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]
    mlx_host_fake_server.openai("vista").chat.completions.create(model="default", messages=own)
    assert mlx_host_fake_server.fake.last.messages == own


def test_vista_may_use_smollm2_and_nothing_unknown(mlx_host_fake_server: RunningServer) -> None:
    client = mlx_host_fake_server.openai("vista")
    hi = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="smollm2", messages=hi)
    assert mlx_host_fake_server.fake.last.model == "smollm2-135m-instruct"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=hi)
