"""The embedded ``tts`` engine: hibari (ONNX Runtime on the CPU, English, 24 kHz), so speech
works on any machine with nothing to download.

Its voices are the one in the package (``heart``) and any another hibari voice already in its
cache (``HIBARI_HOME``); the server never downloads one. Each voice also answers to its Kokoro
name (``af_heart``), so a service can name Kokoro's voices and be served here when Kokoro's
weights are not installed. It is not an MLX engine: its memory is the process's growth while it
loaded (ONNX Runtime, the voice models, the pronunciation tables), measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from mlx_host.engine.tts import SpeechEngine
from mlx_host.errors import ModelLoadError
from mlx_host.models.engine import PreparedModel
from mlx_host.models.memory import process_memory
from mlx_host.models.sources import locate
from mlx_host.models.spec import ModelSpec
from mlx_host.settings import Settings
from mlx_host.speech import Samples, SpeechOptions, Voice

#: What the process grows by beside the asset files while hibari loads (ONNX Runtime, the
#: G2P's tables): the whole growth measured on Linux x86_64 was 185 MB (docs/engine.md), of
#: which the files are about 16 MB. Only an estimate before loading; the load is measured.
_RUNTIME_BYTES = 160 * 2**20


class HibariEngine(SpeechEngine):
    """Speaks with hibari, one voice model per installed voice, sharing the G2P per accent."""

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """hibari's asset directory (its package's ``hibari/assets``)."""
        path = locate(spec.source or "")
        if not (path / "voices.json").is_file():
            raise ModelLoadError(f"{spec.source!r} is not hibari's asset directory")
        return PreparedModel(path, "int8")

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """hibari's voices are 8-bit ONNX models."""
        return "int8"

    @classmethod
    def estimate_bytes(cls, prepared: PreparedModel) -> int:
        """The asset files and the runtime."""
        return sum(f.stat().st_size for f in prepared.path.iterdir()) + _RUNTIME_BYTES

    def _load(self) -> None:
        from hibari import Hibari
        from hibari.voices import VOICES, voice_path

        before = process_memory()
        self._models: dict[str, Any] = {}
        g2p: dict[bool, Any] = {}
        for name, info in VOICES.items():
            with contextlib.suppress(FileNotFoundError):  # not downloaded: not offered
                path = voice_path(name, download_missing=False)
                british = bool(info["british"])
                model = Hibari(voice=name, model=path, threads=1, g2p=g2p.get(british))
                g2p[british] = model.g2p
                self._models[name] = model
                self._voices.append(
                    Voice(
                        name=name, language=info["language"], gender=info["gender"],
                        aliases=(info["kokoro"],),
                        description=f"{info['accent']} English, {info['gender']}",
                    )
                )  # fmt: skip
        if not self._models:
            raise ModelLoadError(f"hibari has no voice installed for {self.spec.name!r}")
        first = next(iter(self._models.values()))
        self.sample_rate = int(first.sample_rate)
        first("Ready.")  # the first synthesis sets up ONNX Runtime's buffers: not on a request
        grown = (process_memory() or 0) - (before or 0)
        files = sum(Path(m.model_path).stat().st_size for m in self._models.values())
        self.loaded_bytes = max(grown, files)

    def _unload(self) -> None:
        self._models = {}

    def _sentences(self, text: str, options: SpeechOptions) -> Generator[Samples]:
        model = self._models[options.voice]
        rng = np.random.default_rng()
        for sentence in model.split_sentences(text):
            for phonemes in model.phonemize(sentence):  # a long sentence comes in clauses
                yield model.from_ids(model.ids(phonemes), options.speed, rng)
