"""All configuration of mlx-host: one pydantic-settings class, from ``MLX_HOST_*`` and ``.env``.

``.env.example`` at the repository root lists every field below with its default; keep them in
step (a test checks it).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlx_host.services import ServiceLimits

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Server settings. Every field is set by the environment variable ``MLX_HOST_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="MLX_HOST_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(9123, description="Port the server listens on.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated full API keys; each key's prefix names its service. "
        "Empty: `mlx-host serve` makes one key per service and prints them once.",
    )
    admin_key: SecretStr | None = Field(
        None, description="Key for management endpoints. Empty: management is disabled."
    )
    keys_file: Path = Field(
        Path("~/.config/mlx-host/keys.json").expanduser(),
        description="Where `mlx-host keys create` stores key hashes (with "
        "MLX_HOST_SESSION_BACKEND=redis: Redis, shared by every host).",
    )
    service_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="JSON object: each service's share of a model's batch and queue when "
        'services compete for it, e.g. {"vista": 2} (default 1 each).',
    )
    service_limits: dict[str, ServiceLimits] = Field(
        default_factory=dict,
        description='JSON object: limits per service, replacing its plugin\'s, e.g. {"fork": '
        '{"requests_per_minute": 600, "tokens_per_minute": 200000, "concurrent_requests": 16}}.',
    )
    metrics_key: SecretStr | None = Field(
        None,
        description="Bearer key that may read GET /metrics (for a Prometheus scraper, which "
        "then needs no admin key; the admin key works too).",
    )
    disabled_plugins: CommaList = Field(
        default_factory=list,
        description="Comma-separated entry-point names of service plugins not to load.",
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object mapping a model alias to a source, e.g. {"qwen3-14b": '
        '"/models/qwen3-14b-mlx"}. A source is a local MLX directory, a Hugging Face-format '
        'directory, a .gguf file, or "package:<distribution>/<path inside it>".',
    )
    models_file: Path | None = Field(
        None,
        description="TOML file of [models.<name>] tables: source, aliases, priority, "
        "pinned, auto_load, idle_ttl_seconds, memory_bytes, weight_format, context_length.",
    )
    memory_budget_bytes: int | None = Field(
        None,
        gt=0,
        description="Bytes all loaded models may use. Empty: physical memory minus "
        "memory_margin_bytes.",
    )
    memory_margin_bytes: int = Field(
        4 * 1024**3, ge=0, description="Memory left to the system when the budget is derived."
    )
    mlx_cache_limit_bytes: int = Field(
        1024**3,
        ge=0,
        description="Most bytes of freed buffers MLX keeps for reuse (counted as used memory; "
        "emptied whenever a model goes idle).",
    )
    stand_in_models: dict[str, str] = Field(
        default_factory=lambda: {
            "llm": "smollm2-135m-instruct",
            "stt": "whisper-tiny-en",
            "tts": "hibari-tts",
            "embedding": "all-minilm-l6-v2",
        },
        description="JSON object: for each model kind, the model that serves names of that "
        "kind with no configured source (a service default such as qwen3-14b on a machine "
        "without it). A kind left out: such names answer 503.",
    )
    engines: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object: the engine that runs each model kind, e.g. {"tts": '
        '"mlx-audio"}, where more than one is installed. Default: the first registered.',
    )
    weight_format: Literal["auto", "float32", "float16", "quantized"] = Field(
        "auto",
        description="How converted models store weights. auto: float32 on the CPU backend "
        "(fast with an optimized BLAS), quantized on Metal/CUDA.",
    )
    blas: str = Field(
        "auto",
        description="Optimized BLAS to load before MLX on Linux: auto (the first known library "
        "present), none, or a path to a shared library with cblas symbols.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "mlx-host",
        description="Where converted models are kept between starts.",
    )
    max_tokens_limit: int = Field(
        4096, description="Largest max_tokens any request may ask for, whatever its service."
    )
    max_batch_size: int = Field(
        32, description="Most sequences one model decodes together in its continuous batch."
    )
    max_queued_requests: int = Field(
        64, ge=0, description="Requests that may wait for a batch slot per model; more get 429."
    )
    queue_timeout_seconds: float = Field(
        300,
        gt=0,
        description="Longest a request waits for a batch row or memory before 503.",
    )
    prompt_cache_bytes: int = Field(
        1024**3,
        ge=0,
        description="Per model: bytes of KV state kept to reuse shared prompt "
        "prefixes across turns (counted in the model's memory).",
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, description="Largest request body accepted; larger ones get 413."
    )
    max_audio_bytes: int = Field(
        25 * 1024 * 1024,
        gt=0,
        description="Largest file upload (audio) accepted; larger ones get 413.",
    )
    max_audio_seconds: float = Field(
        2 * 3600, gt=0, description="Longest audio transcribed; longer files get 400."
    )
    session_backend: Literal["memory", "redis"] = Field(
        "memory", description="Where sessions live: memory (one process) or redis (shared)."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis for sessions when session_backend=redis."
    )
    session_ttl_seconds: float = Field(
        7 * 24 * 3600, gt=0, description="A session expires this long after its last use."
    )
    environment: Literal["development", "production"] = Field(
        "development", description="production requires TLS (ssl_certfile) or allow_insecure."
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) for serving.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) for serving.")
    allow_insecure: bool = Field(
        False, description="Allow production without TLS (e.g. behind a TLS-terminating proxy)."
    )
    shutdown_timeout_seconds: int = Field(
        30,
        gt=0,
        description="On shutdown, how long running requests may take to finish before they "
        "are cut off.",
    )
    log_level: str = Field("info", description="Log level of the server.")

    @field_validator("api_keys", "disabled_plugins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
