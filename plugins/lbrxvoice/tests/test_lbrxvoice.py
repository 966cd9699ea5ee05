"""The lbrxvoice service: short spoken replies."""

import openai
import pytest

from mlx_host.testing import RunningServer, installed_services
from mlx_host_lbrxvoice.plugin import SERVICE


def test_lbrxvoice_is_discovered() -> None:
    found = installed_services()["lbrxvoice"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-lbrxvoice"


def test_lbrxvoice_refuses_long_replies(mlx_host_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError, match="1024"):
        mlx_host_server.openai("lbrxvoice").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], max_tokens=2000
        )


def test_lbrxvoice_replies(mlx_host_server: RunningServer) -> None:
    reply = mlx_host_server.openai("lbrxvoice").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Good morning!"}], max_tokens=20
    )
    assert reply.choices[0].message.content.strip()
