"""``tts`` models on MLX with mlx-audio (Kokoro and the other models it runs), served only from
a local directory.

mlx-audio fetches missing weights and voices from a model hub on first use, and Kokoro's G2P
(misaki) downloads spaCy's English model when it is not installed; this engine lets neither
happen. It checks the directory and the G2P's packages before importing anything (a 503 naming
what is missing), offers only the voices whose files are in the directory
(``voices/<name>.safetensors``; for Kokoro, its English ones, whose G2P it checked), hands those
files to mlx-audio by path, and switches huggingface_hub to offline mode before loading.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from mlx_host.engine.tts import SpeechEngine
from mlx_host.errors import ModelFilesMissingError, ModelLoadError
from mlx_host.models.engine import PreparedModel
from mlx_host.models.sources import stored_format
from mlx_host.models.spec import ModelSpec
from mlx_host.settings import Settings
from mlx_host.speech import Samples, SentenceSplitter, SpeechOptions, Voice

#: Kokoro's voice names start with its language code: a American, b British English, ...
_KOKORO_LANGUAGES = {
    "a": "en-US", "b": "en-GB", "e": "es", "f": "fr", "h": "hi", "i": "it", "j": "ja",
    "p": "pt-BR", "z": "zh",
}  # fmt: skip


#: Kokoro's English G2P: misaki, and the spaCy model it would otherwise download.
_KOKORO_G2P = {"misaki": "misaki[en]", "en_core_web_sm": "en-core-web-sm (spaCy's model)"}


def missing_files(path: Path) -> list[str]:
    """What a local mlx-audio model needs and lacks: its config, its weights, and (for Kokoro)
    an English voice and the packages of its English G2P."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors (the weights)")
    if _model_type(path) == "kokoro":
        if not _english_voices(path):
            missing.append("voices/a*.safetensors or voices/b*.safetensors (an English voice)")
        missing += [
            f"the package {package}"
            for module, package in _KOKORO_G2P.items()
            if importlib.util.find_spec(module) is None
        ]
    return missing


def _english_voices(path: Path) -> dict[str, Path]:
    """Kokoro's American (a...) and British (b...) voices in the directory."""
    return {f.stem: f for f in sorted((path / "voices").glob("[ab]*.safetensors"))}


def _model_type(path: Path) -> str | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


class MLXAudioEngine(SpeechEngine):
    """Speaks with an mlx-audio model from a local directory."""

    uses_mlx = True

    @classmethod
    def prepare(cls, spec: ModelSpec, settings: Settings) -> PreparedModel:
        """The local directory, if it holds everything the model needs (503 naming what it
        lacks otherwise: nothing is downloaded)."""
        if spec.source is None:
            raise ModelLoadError(f"The model {spec.name!r} has no source configured")
        path = Path(spec.source).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"The model {spec.name!r} needs a local mlx-audio directory; {spec.source!r} "
                "is not one (model hubs are not used)"
            )
        if missing := missing_files(path):
            raise ModelFilesMissingError(
                f"The model {spec.name!r} cannot load: it needs {'; '.join(missing)} (model "
                "hubs are not used: install or copy them on the server)"
            )
        return PreparedModel(path, stored_format(path))

    @classmethod
    def planned_format(cls, spec: ModelSpec, settings: Settings) -> str:
        """As stored."""
        path = Path(spec.source or "").expanduser()
        return stored_format(path) if path.is_dir() and not missing_files(path) else "unavailable"

    def _load(self) -> None:
        # huggingface_hub reads HF_HUB_OFFLINE when it is imported (mlx-lm imported it long
        # ago), so its constant is set: a file that slipped past the checks fails, not fetches.
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
        import mlx.core as mx
        from mlx_audio.tts.utils import load_model

        from mlx_host.engine import memory

        memory.set_buffer_cache_limit(self.settings.mlx_cache_limit_bytes)
        path = self.prepared.path
        self._model: Any = load_model(path)
        self._mx = mx
        self._kokoro = _model_type(path) == "kokoro"
        self.sample_rate = int(self._model.sample_rate)
        self.loaded_bytes = memory.parameter_bytes(self._model)
        self._voice_files = (
            _english_voices(path)
            if self._kokoro
            else {f.stem: f for f in sorted((path / "voices").glob("*.safetensors"))}
        )
        if self._voice_files:
            self._voices = [
                Voice(name=name, language=_KOKORO_LANGUAGES.get(name[0], "und"))
                for name in self._voice_files
            ]
        else:  # a model with one built-in voice
            self._voices = [Voice(name="default", language="und")]

    def _unload(self) -> None:
        from mlx_host.engine import memory

        self._model = None
        memory.release_unused()

    def _sentences(self, text: str, options: SpeechOptions) -> Generator[Samples]:
        model, mx = self._model, self._mx
        voice = self._voice_files.get(options.voice)
        kwargs: dict[str, Any] = {"speed": options.speed}
        if voice is not None:
            kwargs["voice"] = str(voice)  # by path: mlx-audio would fetch a name from a hub
        if self._kokoro:
            kwargs["lang_code"] = options.voice[0]
        splitter = SentenceSplitter()
        for sentence in [*splitter.feed(text), *splitter.flush()]:
            for result in model.generate(text=sentence, **kwargs):
                audio = result.audio
                mx.eval(audio)
                yield np.asarray(audio, dtype=np.float32).reshape(-1)
