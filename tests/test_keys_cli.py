"""`mlx-host keys` as an operator uses it: a key printed once, listed without its secret,
accepted by a running server, and refused there as soon as it is revoked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from mlx_host.testing import RunningServer


def keys(keys_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_HOST_")}
    return subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "keys", *args],
        env={**env, "MLX_HOST_KEYS_FILE": str(keys_file), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_keys_are_created_listed_and_revoked(tmp_path: Path, start_mlx_host) -> None:  # type: ignore[no-untyped-def]
    keys_file = tmp_path / "keys.json"
    with start_mlx_host(settings={"keys_file": str(keys_file)}, fake=True) as server:
        server: RunningServer
        created = keys(
            keys_file, "create", "--service", "vista", "--name", "nightly", "--expires", "7d"
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        key_id = created.stdout.split()[1]
        assert key.startswith("vista_") and key not in keys_file.read_text()
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.api_url}/models", headers=headers).status_code == 200

        listed = keys(keys_file, "list")
        assert key_id in listed.stdout and "nightly" in listed.stdout
        assert key not in listed.stdout and key[6:] not in listed.stdout

        revoked = keys(keys_file, "revoke", key_id)
        assert revoked.returncode == 0 and "Revoked" in revoked.stdout
        assert httpx.get(f"{server.api_url}/models", headers=headers).status_code == 401

    unknown = keys(keys_file, "create", "--service", "nope")
    assert unknown.returncode == 2 and "no service 'nope'" in unknown.stdout
    bad = keys(keys_file, "create", "--service", "vista", "--expires", "soon")
    assert bad.returncode == 2 and "--expires" in bad.stdout
