"""The plugin facade: discovery, duplicate and overlapping prefixes, built-in models."""

from collections.abc import Callable

import pytest
import typer
from conftest import ALPHA, ServicesPlugin

from mlx_host import ServiceSpec, hookimpl
from mlx_host.app import create_app
from mlx_host.errors import PluginError
from mlx_host.models.spec import EMBEDDED_LLM
from mlx_host.plugins import PluginManager
from mlx_host.settings import Settings


def manager(**plugins: tuple[str, tuple[ServiceSpec, ...]]) -> PluginManager:
    pm = PluginManager()
    for name, (dist, services) in plugins.items():
        pm.register(ServicesPlugin(*services), name, dist, "1.0")
    return pm.load(discover=False)


def test_services_carry_their_distribution() -> None:
    (service,) = manager(a=("dist-a", (ALPHA,))).services()
    assert service.spec is ALPHA
    assert (service.plugin, service.distribution, service.version) == ("a", "dist-a", "1.0")


def test_duplicate_prefix_names_both_distributions() -> None:
    twin = ServiceSpec(name="twin", key_prefix="alpha_", chat_model="m", completion_model="m")
    pm = manager(a=("dist-a", (ALPHA,)), b=("dist-b", (twin,)))
    with pytest.raises(PluginError, match="dist-a") as caught:
        pm.services()
    assert "dist-b" in str(caught.value)


def test_prefix_that_starts_another_is_refused() -> None:
    longer = ServiceSpec(
        name="alphabet", key_prefix="alpha_bet_", chat_model="m", completion_model="m"
    )
    with pytest.raises(PluginError, match="alpha_bet_"):
        manager(a=("dist-a", (ALPHA,)), b=("dist-b", (longer,))).services()


def test_bad_prefix_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        ServiceSpec(name="x", key_prefix="NoUnderscore", chat_model="m", completion_model="m")


def test_builtins_register_the_embedded_model() -> None:
    assert EMBEDDED_LLM in manager().models()


def test_disabled_entry_points_are_not_loaded() -> None:
    everything = PluginManager().load().plugin_names()
    names = [n for n in everything if n != "mlx_host.builtins"]
    pm = PluginManager(disabled=names).load()
    assert pm.plugin_names() == ["mlx_host.builtins"]
    assert pm.services() == []


def test_a_service_that_cannot_register_names_its_plugin() -> None:
    class BadPrefix:
        @hookimpl
        def mlx_host_register_services(self, register: Callable[[ServiceSpec], None]) -> None:
            register(
                ServiceSpec(name="bad", key_prefix="Bad-", chat_model="m", completion_model="m")
            )

    pm = PluginManager()
    pm.register(BadPrefix(), "badprefix", "dist-bad", "1.0")
    with pytest.raises(PluginError, match="dist-bad") as caught:
        pm.load(discover=False).services()
    assert "key_prefix" in str(caught.value)


def test_service_names_are_safe_in_paths_and_keys() -> None:
    with pytest.raises(ValueError, match="service name"):
        ServiceSpec(name="a:b", key_prefix="ab_", chat_model="m", completion_model="m")


def test_a_failing_commands_hook_names_its_plugin() -> None:
    class Broken:
        @hookimpl
        def mlx_host_register_commands(self, cli: object) -> None:
            raise RuntimeError("no such command style")

    pm = PluginManager()
    pm.register(Broken(), "broken", "dist-broken", "1.0")
    with pytest.raises(PluginError, match="dist-broken"):
        pm.load(discover=False).add_commands(typer.Typer())


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"engines": {"llm": "nope"}}, "MLX_HOST_ENGINES"),
        ({"stand_in_models": {"llm": "absent"}}, "MLX_HOST_STAND_IN_MODELS"),
    ],
)
def test_engines_and_stand_ins_in_settings_must_exist(settings: dict, named: str) -> None:
    with pytest.raises(PluginError, match=named):
        create_app(Settings(_env_file=None, **settings), manager(a=("dist-a", (ALPHA,))))
