"""The anydatanext service: deterministic data output, and any registered model."""

from mlx_host.testing import RunningServer, check_service_policy, installed_services
from mlx_host_anydatanext.plugin import SERVICE


def test_anydatanext_is_discovered() -> None:
    found = installed_services()["anydatanext"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-anydatanext"


def test_anydatanext_outputs_only_data(mlx_host_fake_server: RunningServer) -> None:
    call = check_service_policy(mlx_host_fake_server, SERVICE)
    assert "no commentary" in call.messages[0]["content"]
    assert call.params.temperature == 0.0


def test_anydatanext_may_use_every_model(mlx_host_fake_server: RunningServer) -> None:
    ids = [m.id for m in mlx_host_fake_server.openai("anydatanext").models.list()]
    assert ids[0] == SERVICE.chat_model and "smollm2-135m-instruct" in ids
    mlx_host_fake_server.openai("anydatanext").chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "x"}]
    )
    assert mlx_host_fake_server.fake.last.model == "smollm2-135m-instruct"
