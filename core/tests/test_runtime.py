"""MLX is loaded only when a model is, and with the BLAS the app's settings chose."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip


def test_building_the_app_does_not_import_mlx() -> None:
    out = run(
        """
        import sys
        from mlx_host import hookimpl, ServiceSpec, Engine, TextRequest
        from mlx_host.app import create_app
        from mlx_host.settings import Settings
        create_app(Settings(_env_file=None))
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "mlx_lm")))
        """
    )
    assert out == "[]"


def test_the_blas_is_the_one_the_apps_settings_chose() -> None:
    from mlx_host.runtime.blas import CANDIDATES

    if sys.platform == "darwin" or not any(Path(c).exists() for c in CANDIDATES):
        pytest.skip("no optimized BLAS to choose here (macOS always uses Accelerate)")
    out = run(
        """
        import os
        os.environ["MLX_HOST_BLAS"] = "none"  # what the process settings would choose
        from mlx_host.app import create_app
        from mlx_host.settings import Settings
        create_app(Settings(_env_file=None, blas="auto"))
        from mlx_host.engine import BLAS
        print(BLAS)
        """
    )
    assert out in CANDIDATES
