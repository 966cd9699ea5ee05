"""The lbrxvoice service: short replies meant to be spoken."""

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_lbrxvoice.plugin import SERVICE


def test_lbrxvoice_is_discovered() -> None:
    found = installed_services()["lbrxvoice"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-lbrxvoice"


def test_lbrxvoice_keeps_replies_short_and_speakable(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "no markdown" in call.messages[0]["content"]
    assert call.params.max_tokens <= 256 and SERVICE.policy.max_tokens_cap <= 1024
