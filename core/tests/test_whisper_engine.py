"""The speech-to-text engine's parts: CTranslate2 conversion (float16 and int8 sources), and the
faster forward passes choosing the same tokens as mlx-whisper's own."""

from __future__ import annotations

import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from speech import SENTENCES, TTS_RATE, spoken, word_error_rate
from typer.testing import CliRunner

from mlx_host.audio import SAMPLE_RATE
from mlx_host.cli import app
from mlx_host.engine.ct2 import read_variables
from mlx_host.engine.stt import load_whisper
from mlx_host.models.sources import locate
from mlx_host.models.spec import EMBEDDED_STT

CT2_DIR = locate(EMBEDDED_STT.source or "")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whisper") / "tiny-f32"
    result = CliRunner().invoke(
        app, ["models", "convert", str(CT2_DIR), str(out), "--format", "float32"]
    )
    assert result.exit_code == 0, result.output
    return out


def speech_16k(text: str) -> np.ndarray:
    audio = spoken(text)
    positions = np.linspace(0, len(audio) - 1, int(len(audio) * SAMPLE_RATE / TTS_RATE))
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def mel_window(samples: np.ndarray) -> mx.array:
    from mlx_whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    mel = log_mel_spectrogram(samples, n_mels=80, padding=N_SAMPLES - len(samples))
    return pad_or_trim(mel[:N_FRAMES], N_FRAMES, axis=-2)[None]


def test_the_faster_passes_choose_mlx_whispers_own_tokens(converted: Path) -> None:
    from mlx_whisper.decoding import DecodingOptions, DecodingTask

    from mlx_host.engine.transcribe import _Task

    model = load_whisper(converted)
    mel = mel_window(speech_16k(" ".join(SENTENCES[:3])))
    options = DecodingOptions(language="en", fp16=False)
    reference = DecodingTask(model, options).run(mel)[0]
    ours = _Task(model, options, on_token=None).run(mel)[0]
    assert ours.tokens == reference.tokens
    assert word_error_rate(" ".join(SENTENCES[:3]), ours.text) <= 0.15


def write_ct2(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A CTranslate2 model.bin holding ``variables`` (the reader's format, written back)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
             np.dtype(np.int32): 3, np.dtype(np.float16): 4}  # fmt: skip

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, array in variables.items():
        out += [string(name), struct.pack("<B", array.ndim),
                struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<BI", codes[array.dtype], array.nbytes), array.tobytes()]  # fmt: skip
    out.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(out))


def test_int8_ctranslate2_models_convert_too(tmp_path: Path, converted: Path) -> None:
    variables = read_variables(CT2_DIR / "model.bin")
    int8: dict[str, np.ndarray] = {}
    for name, array in variables.items():
        if name.endswith("weight") and array.ndim == 2 and "embeddings" not in name:
            scale = 127 / np.maximum(np.abs(array).max(axis=1), 1e-8)
            int8[name] = np.round(array * scale[:, None]).astype(np.int8)
            int8[f"{name}_scale"] = scale.astype(np.float32)
        else:
            int8[name] = array
    source = tmp_path / "tiny-int8"
    source.mkdir()
    write_ct2(source / "model.bin", int8)
    (source / "config.json").write_text((CT2_DIR / "config.json").read_text())
    out = tmp_path / "converted"
    result = CliRunner().invoke(app, ["models", "convert", str(source), str(out)])
    assert result.exit_code == 0, result.output
    exact = mx.load(str(converted / "weights.safetensors"))
    approx = mx.load(str(out / "weights.safetensors"))
    assert set(exact) == set(approx)
    name = "decoder.blocks.0.mlp1.weight"
    error = mx.abs(exact[name] - approx[name]).max() / mx.abs(exact[name]).max()
    assert 0 < error.item() < 0.01  # int8 rounding, and nothing worse
