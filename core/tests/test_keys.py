"""Keys are stored hashed and resolved to their service by prefix."""

import asyncio

import pytest

from mlx_host.errors import PluginError
from mlx_host.keys import KeyRing, generate_key, hash_key, mask


def test_generated_keys_carry_their_prefix_and_differ() -> None:
    a, b = generate_key("vista_"), generate_key("vista_")
    assert a.startswith("vista_") and len(a) > 30
    assert a != b


def test_keyring_keeps_only_hashes() -> None:
    ring = KeyRing({"vista_": "vista", "fork_": "fork"})
    key = generate_key("fork_")
    assert ring.add(key) == "fork"
    assert asyncio.run(ring.lookup(key)) == "fork"
    assert asyncio.run(ring.lookup(key + "x")) is None
    assert key not in repr(ring.__dict__)
    assert hash_key(key) in repr(ring.__dict__)


def test_key_for_no_service_stops_the_start_without_revealing_it() -> None:
    ring = KeyRing({"vista_": "vista"})
    with pytest.raises(PluginError) as caught:
        ring.add("fork_secretpart")
    assert "secretpart" not in str(caught.value)
    assert mask("fork_secretpart") == "fork_…"
