"""What a conversation session is built from: the deployment's knobs and the shared adapters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from avatar.application.avatar.hub import ConversationObserver
from avatar.application.conversation.metrics import ConversationMetrics
from avatar.application.conversation.ports import ReplyEngine, TextChunker, VoiceResolver
from avatar.application.critical_path import CriticalPath
from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.asr import SpeechRecognizer
from avatar.application.ports.clock import Clock
from avatar.application.ports.llm import GenerationPause
from avatar.application.ports.queue import TaskQueue
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer
from avatar.domain.models import TTSMode


@dataclass
class ConversationConfig:
    """Per-deployment knobs of the pipeline (from ``Settings``)."""

    language: str | None = None
    default_tts_mode: TTSMode = TTSMode.FAST
    hq_enabled: bool = True
    #: How long barge-in waits for the reply task to wind down before acknowledging anyway.
    barge_in_timeout_s: float = 0.2
    #: Queued messages past which reply audio is shed (control messages are always kept).
    outbox_limit: int = 500
    #: A session's writes waiting for storage past which it takes no new turn (``notice`` ``BUSY``)
    #: until they drain: storage slower than the conversation must not grow memory without bound,
    #: and nothing already queued is dropped (docs/resilience.md, "Storage slower than talk").
    max_pending_writes: int = 100


@dataclass
class ConversationDeps:
    """Adapters a session uses (shared by every session of a process)."""

    recognizer: SpeechRecognizer
    replies: ReplyEngine
    fast_tts: SpeechSynthesizer
    clock: Clock
    object_store: ObjectStore
    queue: TaskQueue
    uow: UnitOfWorkFactory
    metrics: ConversationMetrics
    chunker_factory: Callable[[], TextChunker]
    config: ConversationConfig = field(default_factory=ConversationConfig)
    voice_resolver: VoiceResolver | None = None
    #: Avatar hook (docs/avatar-control.md): told of phases, emotion, reply audio, barge-in.
    observer: ConversationObserver | None = None
    #: Where the session's writes go: at once, or into the storage spool during an outage
    #: (docs/resilience.md); ``None`` writes straight to ``uow`` and ``object_store``.
    durable: DurableWriter | None = None
    #: Told when a reply begins and when it sends its first audio, so background work (prosody,
    #: the HQ pass) yields the CPU meanwhile (docs/adr/0014-voice-latency.md).
    critical_path: CriticalPath | None = None
    #: Held while the voice synthesizes a reply's first chunk, so the model writing the reply's
    #: later sentences does not slow it (the embedded placement; ``None``: never held).
    generation_pause: GenerationPause | None = None
