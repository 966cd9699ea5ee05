"""The whisp service: transcript clean-up is deterministic by default."""

from mlx_host.testing import RunningServer, installed_services
from mlx_host_whisp.plugin import SERVICE


def test_whisp_is_discovered() -> None:
    found = installed_services()["whisp"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-whisp"


def test_whisp_cleans_up_the_same_way_twice(mlx_host_server: RunningServer) -> None:
    client = mlx_host_server.openai("whisp")
    transcript = [{"role": "user", "content": "um so the the meeting is at uh three pm"}]
    first, second = (
        client.chat.completions.create(model="default", messages=transcript, max_tokens=24)
        for _ in range(2)
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content
