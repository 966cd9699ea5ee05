"""The core's own contributions, registered through the same hooks as any plugin's (as in
pluggy's eggsample and tox's built-in runners)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlx_host.hookspecs import hookimpl
from mlx_host.models.engine import EngineType
from mlx_host.models.spec import (
    EMBEDDED_EMBEDDING,
    EMBEDDED_LLM,
    EMBEDDED_STT,
    EMBEDDED_TTS,
    KOKORO_TTS,
    ModelSpec,
)


@hookimpl
def mlx_host_register_models(register: Callable[[ModelSpec], None]) -> None:
    """The embedded defaults, which work on a fresh machine with no model hub, and Kokoro for
    machines that have its weights."""
    for spec in (EMBEDDED_LLM, EMBEDDED_STT, EMBEDDED_TTS, EMBEDDED_EMBEDDING, KOKORO_TTS):
        register(spec)


@hookimpl
def mlx_host_register_engines(register: Callable[[EngineType], None]) -> None:
    """mlx-lm for ``llm`` models, MLX Whisper for ``stt``, hibari and mlx-audio for ``tts``, a
    BERT sentence encoder on MLX for ``embedding``."""
    register(
        EngineType(
            name="mlx-lm",
            kind="llm",
            engine="mlx_host.engine.llm:LLMEngine",
            requires=("mlx_lm",),
            install_hint="pip install mlx-lm",
            description="Text generation with mlx-lm, one continuous batch per model",
        )
    )
    register(
        EngineType(
            name="mlx-whisper",
            kind="stt",
            engine="mlx_host.engine.stt:WhisperEngine",
            requires=("mlx_whisper", "av"),
            install_hint="pip install 'mlx-host[stt]'",
            description="Speech to text with Whisper on MLX, in 30-second windows",
        )
    )
    register(
        EngineType(
            name="mlx-bert",
            kind="embedding",
            engine="mlx_host.engine.embeddings:BertEmbeddingEngine",
            requires=("tokenizers",),
            install_hint="pip install tokenizers",
            description="Sentence embeddings with BERT encoders (sentence-transformers "
            "directories) on MLX, batched across requests",
        )
    )
    register(
        EngineType(
            name="hibari",
            kind="tts",
            engine="mlx_host.engine.hibari:HibariEngine",
            requires=("hibari", "onnxruntime"),
            install_hint="pip install 'mlx-host[tts]'",
            description="English speech with hibari on ONNX Runtime (CPU), 24 kHz",
        )
    )
    register(
        EngineType(
            name="mlx-audio",
            kind="tts",
            engine="mlx_host.engine.mlx_audio_tts:MLXAudioEngine",
            requires=("mlx_audio",),
            install_hint="pip install mlx-audio (and misaki[en] for Kokoro)",
            description="Speech with mlx-audio models (Kokoro, ...) on MLX, from local weights",
        )
    )


@hookimpl
def mlx_host_register_routes(register: Callable[..., Any]) -> None:
    """The OpenAI-compatible endpoints (and Anthropic's Messages API), one router per area."""
    # Imported here: the routers depend on the host, which loads the plugins.
    from mlx_host.api import (
        audio,
        chat,
        completions,
        embeddings,
        health,
        messages,
        models,
        responses,
        sessions,
        speech,
    )

    areas = (
        chat, responses, messages, completions, embeddings, audio, speech, models, sessions,
        health,
    )  # fmt: skip
    for area in areas:
        register(area.router)
