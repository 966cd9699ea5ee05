"""mlx-host: a plugin-based, OpenAI-compatible inference server on Apple's MLX.

Plugin authors need only what is exported here; docs/plugins.md describes every hook.
"""

# First: the runtime sets its BLAS defaults before any library (numpy's included) loads one.
from mlx_host import runtime  # noqa: F401, I001

from mlx_host.api.chat_turn import ChatTurn
from mlx_host.api.deps import Caller, HostDep
from mlx_host.api.answers import StreamedResponse, collect, sse_event, until_done, usage
from mlx_host.api.schemas import ChatCompletionRequest, ChatMessage
from mlx_host.errors import (
    AuthenticationError,
    ConflictError,
    GenerationError,
    InvalidRequestError,
    MLXHostError,
    ModelLoadError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnprocessableError,
)
from mlx_host.embeddings import Embedder, EmbeddingInput, Embeddings
from mlx_host.generation import Delta, SamplingParams, TextGenerator, TextRequest
from mlx_host.hookspecs import hookimpl
from mlx_host.host import Host
from mlx_host.models.engine import Engine, EngineType, PreparedModel
from mlx_host.models.manager import LoadedModel
from mlx_host.models.spec import ModelSpec
from mlx_host.plugins import InstalledService
from mlx_host.services import Capability, ServiceLimits, ServicePolicy, ServiceSpec
from mlx_host.speech import (
    Samples,
    SentenceSplitter,
    SpeechOptions,
    Synthesizer,
    Voice,
    check_speed,
    choose_voice,
    speakable,
)
from mlx_host.transcription import (
    Segment,
    final_transcript,
    Transcriber,
    Transcript,
    TranscriptionOptions,
    TranscriptPiece,
    Word,
)

__all__ = [
    "AuthenticationError",
    "Caller",
    "Capability",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatTurn",
    "ConflictError",
    "Delta",
    "Embedder",
    "EmbeddingInput",
    "Embeddings",
    "Engine",
    "EngineType",
    "GenerationError",
    "Host",
    "HostDep",
    "InstalledService",
    "InvalidRequestError",
    "LoadedModel",
    "MLXHostError",
    "ModelLoadError",
    "ModelSpec",
    "NotFoundError",
    "PermissionDeniedError",
    "PreparedModel",
    "RateLimitError",
    "RequestTooLargeError",
    "Samples",
    "SamplingParams",
    "Segment",
    "SentenceSplitter",
    "ServiceLimits",
    "ServicePolicy",
    "ServiceSpec",
    "ServiceUnavailableError",
    "SpeechOptions",
    "StreamedResponse",
    "Synthesizer",
    "TextGenerator",
    "TextRequest",
    "Transcriber",
    "Transcript",
    "TranscriptPiece",
    "TranscriptionOptions",
    "UnprocessableError",
    "Voice",
    "Word",
    "check_speed",
    "choose_voice",
    "collect",
    "final_transcript",
    "hookimpl",
    "speakable",
    "sse_event",
    "until_done",
    "usage",
]
