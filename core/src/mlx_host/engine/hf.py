"""Convert a Hugging Face-format model directory into an MLX directory with mlx-lm."""

from __future__ import annotations

from pathlib import Path

from mlx_lm import convert

from mlx_host.engine.gguf import WeightFormat


def convert_hf(src: Path, dst: Path, weight_format: WeightFormat) -> None:
    """Write ``dst`` from the Hugging Face-format directory ``src`` in ``weight_format``."""
    convert(
        str(src),
        mlx_path=str(dst),
        quantize=weight_format == "quantized",
        dtype=None if weight_format == "quantized" else weight_format,
    )
