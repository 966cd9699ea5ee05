"""The README's plugin recipe, built as written into an installed distribution."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
#: A fenced block whose first line names the file it is, e.g. ``# mlx-host-zebra/pyproject.toml``.
_FILE_BLOCK = re.compile(r"```(?:toml|python)\n# (mlx-host-zebra/\S+)\n(.*?)```", re.DOTALL)


def write_recipe(root: Path) -> Path:
    """The README recipe's files under ``root``; returns the project directory."""
    blocks = _FILE_BLOCK.findall(README.read_text())
    assert len(blocks) >= 4, "the README recipe is missing files"
    for name, text in blocks:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "mlx-host-zebra"


@pytest.fixture(scope="session")
def zebra_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recipe's project, as a reader would write it from the README."""
    return write_recipe(tmp_path_factory.mktemp("recipe"))


@pytest.fixture(scope="session")
def zebra_site(zebra_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the recipe built into a wheel and unpacked: on ``sys.path``, it is
    an installed distribution (metadata and entry points included)."""
    uv = shutil.which("uv")
    assert uv, "uv is needed to build the recipe (.ci/run installs it)"
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(zebra_recipe)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("mlx_host_zebra-0.1.0-*.whl")
    site = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(site)
    return site
