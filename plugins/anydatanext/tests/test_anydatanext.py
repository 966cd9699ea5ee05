"""The anydatanext service: may use any registered model."""

from mlx_host.testing import RunningServer, installed_services
from mlx_host_anydatanext.plugin import SERVICE


def test_anydatanext_is_discovered() -> None:
    found = installed_services()["anydatanext"]
    assert found.spec is SERVICE and found.distribution == "mlx-host-anydatanext"


def test_anydatanext_sees_every_model(mlx_host_server: RunningServer) -> None:
    ids = [m.id for m in mlx_host_server.openai("anydatanext").models.list()]
    assert ids[0] == SERVICE.default_model
    assert "smollm2-135m-instruct" in ids


def test_anydatanext_extracts_data(mlx_host_server: RunningServer) -> None:
    reply = mlx_host_server.openai("anydatanext").chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
    )
    assert "Paris" in reply.choices[0].message.content
