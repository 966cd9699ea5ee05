"""`mlx-host serve` as a newcomer runs it: no keys configured, keys printed once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from mlx_host.testing import free_socket


def test_serve_prints_keys_that_work_and_never_logs_them(
    tmp_path: Path, mlx_host_cache_dir: Path
) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLX_HOST_")},
        "MLX_HOST_PORT": str(port),
        "MLX_HOST_CACHE_DIR": str(mlx_host_cache_dir),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_host.cli", "serve"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        key = re.search(r"vista_[A-Za-z0-9_-]{20,}", log.read_text()).group(0)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer x"})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert text.count(key) == 1  # printed once at start, never logged afterwards


def test_production_refuses_to_serve_without_tls(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_HOST_")}
    run = subprocess.run(
        [sys.executable, "-m", "mlx_host.cli", "serve"],
        env={**env, "MLX_HOST_ENVIRONMENT": "production", "COLUMNS": "200"},
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "TLS" in run.stdout and "MLX_HOST_ALLOW_INSECURE" in run.stdout
