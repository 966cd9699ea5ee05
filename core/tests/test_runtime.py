"""MLX is loaded only when a model is, and with the BLAS the app's settings chose."""

from __future__ import annotations

import os
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


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS always has Accelerate")
def test_a_server_without_an_optimized_blas_is_told_once_how_to_get_one(tmp_path: Path) -> None:
    from mlx_host.runtime.blas import find_blas, reference_blas_warning

    missing = str(tmp_path / "libopenblas.so.0")  # what a machine without the package has
    assert find_blas(missing) is None
    warning = reference_blas_warning(missing)
    assert warning is not None and "apt-get install libopenblas0-pthread" in warning
    assert "3x slower" in warning
    assert reference_blas_warning("none") is None  # asked for: no warning
    # The process that loads MLX on the reference BLAS logs it, once, and /health says so.
    code = textwrap.dedent(
        """
        import logging, os, sys
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from mlx_host import runtime
        runtime.choose_blas(os.environ["MISSING_BLAS"])
        from mlx_host.engine import BLAS
        runtime.prepare()
        print("BLAS", BLAS)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "MISSING_BLAS": missing},
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "BLAS reference" in out.stdout
    assert out.stderr.count("no optimized BLAS found") == 1, out.stderr
