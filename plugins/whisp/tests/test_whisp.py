"""The whisp service: transcript clean-up that must not invent anything."""

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_whisp.plugin import SERVICE


def test_whisp_is_discovered() -> None:
    assert installed_services()["whisp"].spec is SERVICE


def test_whisp_cleans_up_deterministically(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "never add content" in call.messages[0]["content"]
    assert call.params.temperature == 0.0
