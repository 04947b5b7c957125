"""Composition root: the one place that turns a :class:`Settings` into running adapters and services.

Nothing is built at import time. :func:`build_container` chooses each adapter from the settings
(embedded default or the compose/production placement); :func:`build_services` builds the use
cases over a container's adapters and subscribes the queue handlers; :func:`running` does both
around an app's life and releases everything (subprocesses, pools, workers) in reverse order.
Tests put fakes or real adapters into a :class:`Container` and go through the same functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from avatar.application.accounts import AccountService
from avatar.application.admission import SessionAdmission
from avatar.application.avatar import AvatarHub, load_pose_config
from avatar.application.brain import (
    BrainConfig,
    BrainDeps,
    ConversationBrain,
    HistoryFold,
    MemorySearch,
    load_persona,
)
from avatar.application.conversation import (
    BrainReplyEngine,
    ConversationConfig,
    ConversationDeps,
    ConversationMetrics,
    ReplyEngine,
    SessionManager,
    make_hq_handler,
)
from avatar.application.critical_path import CriticalPath
from avatar.application.erasure import DataEraser
from avatar.application.feedback import FinetuneExporter
from avatar.application.live.policy import FilterConfig, load_word_list
from avatar.application.live.service import LiveConfig, LiveService
from avatar.application.openai_compat import (
    FileTranscriber,
    OpenAIChat,
    OpenAICompat,
    OpenAISpeech,
    TranscriptionLimits,
)
from avatar.application.ports.asr import SpeechRecognizer
from avatar.application.ports.clock import Clock
from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatModel, GenerationPause, TextEmbedder
from avatar.application.ports.notify import ClientNotifier, NotificationRelay
from avatar.application.ports.prosody import ProsodyAnalyzer
from avatar.application.ports.queue import TaskHandler, TaskQueue
from avatar.application.ports.session_state import SessionStateStore
from avatar.application.ports.speaker import SpeakerEncoder
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, VoiceReference
from avatar.application.prosody import ProsodyAnalysisHandler
from avatar.application.realtime.ports import RealtimeDeps
from avatar.application.retention import RetentionPolicy, RetentionScheduler, RetentionSweeper
from avatar.application.tasks import HQ_TOPIC, PROSODY_TOPIC
from avatar.application.voice_profiles import (
    AudioClipDecoder,
    StoredVoiceResolver,
    VoiceProfileService,
    voice_reference,
)
from avatar.application.voice_style import StyledSynthesizer, load_voice_styles
from avatar.domain.models import Transcription, TTSMode
from avatar.settings import Placement, RetentionSettings, Settings
from avatar_common.text import ClauseChunker

if TYPE_CHECKING:
    from avatar.application.durable_writes import DurableWriter, SpooledStorage
    from avatar.infrastructure.crypto import Keyring
    from avatar.infrastructure.vtube_studio import VTubeStudioBridge

log = logging.getLogger(__name__)


@dataclass
class Container:
    """Every adapter the application uses, built from one :class:`Settings`.

    Tests build one directly with fakes from ``fakes.py`` or real adapters; production code gets
    one from :func:`build_container`.
    """

    settings: Settings
    clock: Clock
    recognizer: SpeechRecognizer
    chat_model: ChatModel
    text_embedder: TextEmbedder
    fast_tts: SpeechSynthesizer
    hq_tts: SpeechSynthesizer
    speaker_encoder: SpeakerEncoder
    prosody: ProsodyAnalyzer
    uow: UnitOfWorkFactory
    object_store: ObjectStore
    queue: TaskQueue
    sample_decoder: AudioClipDecoder
    metrics: ConversationMetrics
    #: Where resumable session state is kept (Redis in compose, so any replica can resume).
    session_state: SessionStateStore | None = None
    #: Who tells clients about background results (``hq_ready``, ``prosody_analysis``) across
    #: replicas (Redis pub/sub when the deployment uses Redis); ``None`` means this process's
    #: session manager, which forwards to the session's connection.
    notifier: NotificationRelay | None = None
    #: The VTube Studio bridge, once :func:`running` started it (``AVATAR_VTS__ENABLED``).
    vtube_studio: VTubeStudioBridge | None = None
    #: Writes that wait out a database or object store outage (docs/resilience.md); ``None``:
    #: writes fail when storage is unreachable.
    storage_spool: SpooledStorage | None = None
    #: Replies between their final transcript and first audio; background work waits for them.
    critical_path: CriticalPath = field(default_factory=CriticalPath)
    #: Holds the model's generation while the voice makes a reply's first chunk (embedded only).
    generation_pause: GenerationPause | None = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a cleanup to run (last registered first) in :meth:`aclose`."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:  # cleanup must go on for the rest
                log.exception("error while closing an adapter")

    async def health(self) -> list[ComponentHealth]:
        """Each dependency's status; a failing check is reported, never raised."""
        checks: list[tuple[str, Callable[[], Awaitable[ComponentHealth]]]] = [
            ("asr", self.recognizer.health),
            ("llm", self.chat_model.health),
            ("tts_fast", self.fast_tts.health),
            ("tts_hq", self.hq_tts.health),
            ("prosody", self.prosody.health),
            ("database", self.uow.health),
            ("object_store", self.object_store.health),
        ]
        if self.session_state is not None:
            checks.append(("session_state", self.session_state.health))
        if self.vtube_studio is not None:
            checks.append(("vtube_studio", self.vtube_studio.health))
        if self.storage_spool is not None:
            checks.append(("spool", self.storage_spool.health))
        results = []
        for name, check in checks:
            try:
                results.append(await check())
            except Exception as exc:  # a health check must never take the endpoint down
                results.append(ComponentHealth(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}"))
        return results


@dataclass
class Services:
    """The use cases the routes and sockets call, built over one :class:`Container`."""

    replies: ReplyEngine
    sessions: SessionManager
    voice_profiles: VoiceProfileService
    memory: MemorySearch
    hq_handler: TaskHandler
    #: ``None`` when prosody analysis is disabled.
    prosody_handler: ProsodyAnalysisHandler | None
    #: Avatar events for renderers (docs/avatar-control.md).
    avatar_hub: AvatarHub
    #: Users, credentials and the audit log (docs/security.md).
    accounts: AccountService
    #: Deletes sessions, voice profiles and accounts with everything stored for them.
    eraser: DataEraser
    #: Per-user and per-address limits on creating sessions.
    admission: SessionAdmission
    #: The live stream (docs/live.md); ``None`` when no platform is configured.
    live: LiveService | None = None
    #: ``(read key, operator key)`` of the overlay and stage (generated, docs/live.md "Keys").
    live_keys: tuple[str, str] | None = None
    #: Rated replies as fine-tuning data, for the admin download (docs/live.md, "Feedback").
    finetune: FinetuneExporter | None = None
    #: Deletes audio past its retention and archives raw inputs as Opus (docs/security.md).
    retention: RetentionSweeper | None = None
    #: The OpenAI Realtime endpoint's adapters (docs/realtime.md).
    realtime: RealtimeDeps | None = None
    #: The OpenAI-compatible ``/v1`` endpoints' use cases (docs/openai.md).
    openai: OpenAICompat | None = None

    async def aclose(self) -> None:
        """End the live stream and every live session (replies stopped, writes flushed), then the
        avatar streams."""
        try:
            if self.live is not None:
                await self.live.aclose()
            await self.sessions.aclose()
        finally:
            await self.avatar_hub.aclose()


def resolve_secrets(settings: Settings) -> None:
    """Fill in the signing key (generated into the data directory when unset in development).

    Idempotent; production settings without a key never get here (``Settings`` refuses them).
    """
    from avatar.infrastructure.secrets import resolve_signing_keys

    resolve_signing_keys(settings)


async def build_container(settings: Settings) -> Container:
    """Build and start every adapter the settings ask for.

    The adapters' modules are imported here, not at the top, so that importing the application
    never loads a model or a heavy library.
    """
    from avatar.infrastructure.asr import build_recognizer
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.embedding import build_text_embedder
    from avatar.infrastructure.heap_trim import HeapTrimmer
    from avatar.infrastructure.llm import build_chat
    from avatar.infrastructure.metrics import PrometheusConversationMetrics
    from avatar.infrastructure.notify import build_client_notifier
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.prosody import build_prosody_analyzer
    from avatar.infrastructure.queue import build_task_queue
    from avatar.infrastructure.secrets import load_keyring
    from avatar.infrastructure.session_state import build_session_state_store
    from avatar.infrastructure.speaker import VoiceSampleDecoder, build_speaker_encoder
    from avatar.infrastructure.tts import build_synthesizers

    if settings.engines == "instant":
        return await build_instant_serving_container(settings)
    stack = contextlib.AsyncExitStack()
    try:
        resolve_secrets(settings)
        keyring = load_keyring(settings)
        uow = await build_unit_of_work_factory(settings, stack, keyring)
        object_store = await build_object_store(settings, stack, keyring)
        queue = await build_task_queue(settings, stack)
        chat_model, generation_pause = await build_chat(settings, stack)
        recognizer = await build_recognizer(settings, stack)
        fast_tts, hq_tts = await build_synthesizers(settings, stack)
        container = Container(
            settings=settings,
            clock=SystemClock(),
            recognizer=recognizer,
            chat_model=chat_model,
            text_embedder=await build_text_embedder(settings, stack),
            fast_tts=fast_tts,
            hq_tts=hq_tts,
            speaker_encoder=await build_speaker_encoder(settings, stack),
            prosody=await build_prosody_analyzer(settings, stack),
            uow=uow,
            object_store=object_store,
            queue=queue,
            sample_decoder=VoiceSampleDecoder(),
            metrics=PrometheusConversationMetrics(),
            session_state=await build_session_state_store(settings, stack),
            notifier=await build_client_notifier(settings, stack),
            generation_pause=generation_pause,
        )
        container.storage_spool = build_storage_spool(settings, keyring, uow, object_store)
        if container.storage_spool is not None:  # its directory lock goes with the container
            stack.push_async_callback(container.storage_spool.aclose)
    except BaseException:
        await stack.aclose()
        raise
    container.on_close(stack.aclose)
    try:
        await warm_prompt_cache(container)
    except BaseException:  # e.g. an unreadable persona file: nothing started may outlive this
        await container.aclose()
        raise
    # Freed audio buffers go back to the system (the embedded stack's memory goal, ADR 0014).
    trimmer = HeapTrimmer()
    trimmer.start()
    container.on_close(trimmer.aclose)
    return container


async def warm_prompt_cache(container: Container, timeout_s: float = 60.0) -> None:
    """The persona's prompt head computed once at start-up, so the first reply of the first
    session does not pay for it (docs/adr/0014-voice-latency.md); a model that is slow or down
    only logs (replies then warm it themselves)."""
    language = container.settings.asr.language or "en"
    brain = ConversationBrain(uuid.uuid4(), brain_deps(container))
    try:
        async with asyncio.timeout(timeout_s):
            # Not as a session: the first real session must find the warmed server free
            # (infrastructure/llm_affinity.py).
            await brain.warm_up(language, as_session=False)
    except TimeoutError:
        log.warning("the model did not finish the prompt warm-up within %.0f s", timeout_s)


def build_storage_spool(
    settings: Settings, keyring: Keyring, uow: UnitOfWorkFactory, object_store: ObjectStore
) -> SpooledStorage | None:
    """The storage spool under ``<data_dir>/spool`` (``settings.spool``), its writer and replayer;
    ``None`` when the spool is turned off. The replayer starts with the app (:func:`running`)."""
    from avatar.application.durable_writes import DurableWriter, SpooledStorage, SpoolReplayer
    from avatar.application.storage_records import StorageApplier
    from avatar.infrastructure.crypto import Envelope
    from avatar.infrastructure.metrics import PrometheusSpoolMetrics
    from avatar.infrastructure.spool import FileSpool

    cfg = settings.spool
    if not cfg.enabled:
        return None
    spool = FileSpool(
        cfg.directory or settings.data_dir / "spool",
        Envelope(keyring),
        max_records=cfg.max_records,
        max_bytes=cfg.max_bytes,
    )
    applier = StorageApplier(uow, object_store)
    metrics = PrometheusSpoolMetrics()

    async def reachable() -> bool:
        return (await uow.health()).ok and (await object_store.health()).ok

    replayer = SpoolReplayer(
        spool,
        applier,
        metrics,
        probe=reachable,
        min_delay_s=cfg.replay_min_delay_s,
        max_delay_s=cfg.replay_max_delay_s,
    )
    writer = DurableWriter(applier, spool, metrics, on_spooled=replayer.wake)
    return SpooledStorage(spool, writer, replayer)


#: How the served instant engines endpoint (docs/deploy.md, "Load testing"): an utterance ends
#: after this much silence following sound, or at the longest utterance.
INSTANT_ENDPOINT_SILENCE_MS = 300.0
INSTANT_MAX_UTTERANCE_MS = 15000.0
#: The served instant engines' reply: a short tone (~60 ms of tone per character).
INSTANT_REPLY = "[happy] Hello there."


async def build_instant_serving_container(settings: Settings) -> Container:
    """The instant engines as ``avatar serve orchestrator --instant-engines`` serves them: they
    endpoint after ~300 ms of silence following sound and answer with a short tone. Storage is in
    memory unless ``database.placement`` is ``remote``; then the database, object store, task queue
    and session state come from the settings as in production (many replicas share them)."""
    from avatar.infrastructure.instant import InstantChatModel, InstantRecognizer

    container = build_instant_container(settings)
    container.recognizer = InstantRecognizer(
        utterance_ms=INSTANT_MAX_UTTERANCE_MS,
        silence_rms=200.0,
        endpoint_silence_ms=INSTANT_ENDPOINT_SILENCE_MS,
    )
    container.chat_model = InstantChatModel((INSTANT_REPLY,))
    _instant_allocation_probe(container)
    if settings.database.placement is not Placement.REMOTE:
        await _instant_object_store_on_disk(settings, container)
        return container
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.notify import build_client_notifier
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.queue import build_task_queue
    from avatar.infrastructure.secrets import load_keyring
    from avatar.infrastructure.session_state import build_session_state_store

    stack = contextlib.AsyncExitStack()
    try:
        resolve_secrets(settings)
        keyring = load_keyring(settings)
        container.uow = await build_unit_of_work_factory(settings, stack, keyring)
        container.object_store = await build_object_store(settings, stack, keyring)
        container.queue = await build_task_queue(settings, stack)
        container.session_state = await build_session_state_store(settings, stack)
        container.notifier = await build_client_notifier(settings, stack)
        container.storage_spool = build_storage_spool(
            settings, keyring, container.uow, container.object_store
        )
        if container.storage_spool is not None:  # its directory lock goes with the container
            stack.push_async_callback(container.storage_spool.aclose)
    except BaseException:
        await stack.aclose()
        raise
    container.on_close(stack.aclose)
    return container


#: Opt-in for soaks (docs/deploy.md, "Load testing"): the file the served instant engines write
#: their Python allocation growth to when they close, and when to take the baseline (seconds).
INSTANT_TRACEMALLOC_ENV = "AVATAR_INSTANT_TRACEMALLOC"
INSTANT_TRACEMALLOC_MARK_ENV = "AVATAR_INSTANT_TRACEMALLOC_MARK_S"


def _instant_allocation_probe(container: Container) -> None:
    """Trace allocations when ``AVATAR_INSTANT_TRACEMALLOC`` names a file (``avatar bench soak
    --tracemalloc``): :mod:`avatar.infrastructure.memory_probe`."""
    import os
    from pathlib import Path

    out = os.environ.get(INSTANT_TRACEMALLOC_ENV)
    if not out:
        return
    from avatar.infrastructure.memory_probe import ProbeRun

    probe = ProbeRun(Path(out), float(os.environ.get(INSTANT_TRACEMALLOC_MARK_ENV, "60")))
    probe.start()
    container.on_close(probe.aclose)


async def _instant_object_store_on_disk(settings: Settings, container: Container) -> None:
    """The served instant engines keep every turn's audio as the app does: encrypted files under
    ``object_store.root`` (docs/deploy.md, "Load testing"), so a long soak's audio is on disk, not
    in the process's memory (issue 15, item 7)."""
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.secrets import load_keyring

    stack = contextlib.AsyncExitStack()
    try:
        resolve_secrets(settings)
        container.object_store = await build_object_store(settings, stack, load_keyring(settings))
    except BaseException:
        await stack.aclose()
        raise
    container.on_close(stack.aclose)


def build_instant_container(
    settings: Settings, *, utterance_ms: float = 1000.0, silence_rms: float = 200.0
) -> Container:
    """A container of the instant engine set (``avatar.infrastructure.instant``): no models, storage
    in memory, this process's real clock, task queue and metrics. ``avatar bench conversation``
    measures the orchestrator's own capacity with it.

    Args:
        settings: The configuration (the queue bound, the conversation limits).
        utterance_ms: Non-silent audio after which the recognizer ends an utterance.
        silence_rms: Chunks quieter than this RMS neither start nor extend an utterance.
    """
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.instant import (
        InMemoryDatabase,
        InMemoryObjectStore,
        InstantChatModel,
        InstantProsodyAnalyzer,
        InstantRecognizer,
        InstantSpeakerEncoder,
        InstantSynthesizer,
        InstantTextEmbedder,
    )
    from avatar.infrastructure.metrics import PrometheusConversationMetrics
    from avatar.infrastructure.queue import InProcessTaskQueue
    from avatar.infrastructure.speaker import VoiceSampleDecoder

    return Container(
        settings=settings,
        clock=SystemClock(),
        recognizer=InstantRecognizer(utterance_ms=utterance_ms, silence_rms=silence_rms),
        chat_model=InstantChatModel(),
        text_embedder=InstantTextEmbedder(),
        fast_tts=InstantSynthesizer(TTSMode.FAST),
        hq_tts=InstantSynthesizer(TTSMode.HQ),
        speaker_encoder=InstantSpeakerEncoder(),
        prosody=InstantProsodyAnalyzer(),
        uow=InMemoryDatabase(),
        object_store=InMemoryObjectStore(),
        queue=InProcessTaskQueue(settings.queue.max_pending),
        sample_decoder=VoiceSampleDecoder(),
        metrics=PrometheusConversationMetrics(),
    )


def brain_config(settings: Settings) -> BrainConfig:
    """The brain's budgets from ``settings.llm``; the embedded placement keeps a short history that
    it drops instead of summarizing (docs/adr/0014-voice-latency.md, "Eighth round")."""
    llm = settings.llm
    embedded = llm.placement is Placement.EMBEDDED
    fold = llm.history_fold or (HistoryFold.DROP if embedded else HistoryFold.SUMMARIZE)
    return BrainConfig(
        context_tokens=llm.n_ctx,
        max_reply_tokens=llm.max_tokens,
        max_spoken_sentences=llm.max_spoken_sentences,
        temperature=llm.temperature,
        history_keep_tokens=llm.embedded_history_keep_tokens if embedded else llm.history_keep_tokens,
        summarize_at_tokens=(
            llm.embedded_history_fold_at_tokens if embedded else llm.history_summarize_at_tokens
        ),
        fold=fold,
        memory_top_k=llm.memory_top_k,
        prime_memories=llm.prime_memories,
        memory_max_tokens=llm.embedded_memory_max_tokens if embedded else llm.memory_max_tokens,
    )


def brain_deps(container: Container) -> BrainDeps:
    """What every session's brain shares; loading the persona fails start-up with the file's path."""
    settings = container.settings
    return BrainDeps(
        chat_model=container.chat_model,
        embedder=container.text_embedder,
        uow=container.uow,
        persona=load_persona(settings.llm.persona_file),
        config=brain_config(settings),
        durable=_durable(container),
        background_gate=container.critical_path.clear,
    )


def _durable(container: Container) -> DurableWriter | None:
    """The storage spool's writer (docs/resilience.md), when the container has a spool."""
    return container.storage_spool.writer if container.storage_spool is not None else None


def conversation_deps(
    container: Container, replies: ReplyEngine, observer: AvatarHub | None = None
) -> ConversationDeps:
    """The conversation pipeline's dependencies (shared by every session of the process)."""
    settings = container.settings
    config = ConversationConfig(
        language=settings.asr.language,
        default_tts_mode=TTSMode(settings.conversation.default_tts_mode),
        hq_enabled=settings.tts.hq_enabled,
        max_pending_writes=settings.conversation.max_pending_writes,
    )
    return ConversationDeps(
        recognizer=container.recognizer,
        replies=replies,
        fast_tts=voice_styled(settings, container.fast_tts),
        clock=container.clock,
        object_store=container.object_store,
        queue=container.queue,
        uow=container.uow,
        metrics=container.metrics,
        chunker_factory=functools.partial(ClauseChunker, first_max_words=settings.tts.first_chunk_max_words),
        config=config,
        voice_resolver=StoredVoiceResolver(container.uow, container.object_store),
        observer=observer,
        durable=container.storage_spool.writer if container.storage_spool is not None else None,
        critical_path=container.critical_path,
        generation_pause=container.generation_pause,
    )


def live_config(settings: Settings) -> LiveConfig:
    """The stage and filter settings from ``settings.live``; a bad profanity file fails start-up."""
    live = settings.live
    filters = FilterConfig(
        min_chars=live.min_chars,
        repeat_window_s=live.repeat_window_s,
        flood_messages=live.flood_messages,
        flood_window_s=live.flood_window_s,
        answer_streamer=live.answer_streamer,
        bots=frozenset(b.casefold() for b in live.bots),
        profanity=load_word_list(live.profanity_file),
    )
    return LiveConfig(
        avatar_name=live.avatar_name,
        pause_s=live.pause_s,
        queue_capacity=live.queue_size,
        max_age_s=live.max_age_s,
        language=live.language,
        filters=filters,
    )


def build_live(
    container: Container, replies: ReplyEngine, hub: AvatarHub | None = None
) -> LiveService | None:
    """The live service over the configured platforms, or ``None`` when none is configured; its
    replies drive ``hub`` like a conversation's (docs/avatar-control.md)."""
    settings = container.settings
    if not settings.live.enabled():
        return None
    from avatar.infrastructure.live.sources import build_chat_sources
    from avatar.infrastructure.metrics import PrometheusLiveMetrics

    async def streamer() -> uuid.UUID:
        owner, _created = await AccountService(container.uow, container.clock).ensure_local_owner()
        return owner.user_id

    return LiveService(
        build_chat_sources(settings),
        replies=replies,
        tts=container.fast_tts,
        uow=container.uow,
        clock=container.clock,
        metrics=PrometheusLiveMetrics(),
        config=live_config(settings),
        owner=streamer,
        observer=hub,
    )


def finetune_exporter(container: Container) -> FinetuneExporter:
    """The fine-tuning export as ``avatar export finetune`` makes it (docs/live.md, "Feedback")."""
    from avatar.infrastructure.llm import approximate_tokens

    llm = container.settings.llm
    return FinetuneExporter(
        container.uow,
        load_persona(llm.persona_file).system_message(),
        approximate_tokens,
        llm.n_ctx - llm.max_tokens,
    )


def realtime_deps(container: Container, replies: BrainReplyEngine) -> RealtimeDeps:
    """What ``WS /v1/realtime`` needs beside the sessions (docs/realtime.md)."""
    from avatar.infrastructure.resampling import SoxrStreamResampler

    settings = container.settings

    async def transcribe(pcm: bytes, sample_rate: int) -> Transcription:
        return await container.recognizer.transcribe(pcm, sample_rate, language=settings.asr.language)

    return RealtimeDeps(
        resampler=SoxrStreamResampler,
        voices=container.fast_tts.voices,
        transcribe=transcribe,
        count_tokens=container.chat_model.count_tokens,
        instructions=replies,
        silence_duration_ms=settings.asr.min_silence_ms,
        model=settings.llm.model,
    )


def build_services(container: Container) -> Services:
    """Build the use cases over ``container`` and subscribe the queue handlers (HQ pass, prosody);
    call it before the queue starts."""
    settings = container.settings
    replies = BrainReplyEngine(brain_deps(container))
    hub = avatar_hub(settings)
    deps = conversation_deps(container, replies, hub)
    sessions = SessionManager(
        deps,
        max_sessions=settings.live_session_limit(),
        grace_s=settings.security.reconnect_grace_s,
        state_store=container.session_state,
        max_sessions_per_user=settings.conversation.max_sessions_per_user,
        max_parked=settings.conversation.max_parked_sessions,
        retry_after_s=settings.conversation.busy_retry_after_s,
    )
    to_clients: ClientNotifier = sessions
    if container.notifier is not None:
        container.notifier.bind(sessions)
        sessions.relay = container.notifier
        to_clients = container.notifier
    hq_handler = make_hq_handler(
        hq_tts=voice_styled(settings, container.hq_tts),
        object_store=container.object_store,
        uow=container.uow,
        notifier=to_clients,
        clock=container.clock,
        voice_resolver=deps.voice_resolver,
        durable=_durable(container),
    )
    consume = settings.queue.consume
    if consume:
        container.queue.subscribe(HQ_TOPIC, container.critical_path.yielding(hq_handler))
    else:
        log.info("queue.consume is off: the HQ pass and prosody analysis run in other processes")
    prosody_handler = None
    if settings.prosody.enabled:
        prosody_handler = ProsodyAnalysisHandler(
            container.prosody,
            container.uow,
            container.object_store,
            to_clients,
            container.clock,
            durable=_durable(container),
        )
        if consume:
            container.queue.subscribe(
                PROSODY_TOPIC,
                container.critical_path.yielding(prosody_handler),
                concurrency=settings.prosody.consumers,
            )
    else:
        log.info("prosody analysis is disabled")
    voice_profiles = VoiceProfileService(
        uow=container.uow,
        object_store=container.object_store,
        encoder=container.speaker_encoder,
        recognizer=container.recognizer,
        fast_tts=container.fast_tts,
        hq_tts=container.hq_tts,
        decoder=container.sample_decoder,
        clock=container.clock,
    )
    return Services(
        replies=replies,
        sessions=sessions,
        voice_profiles=voice_profiles,
        memory=MemorySearch(container.text_embedder, container.uow),
        hq_handler=hq_handler,
        prosody_handler=prosody_handler,
        avatar_hub=hub,
        accounts=AccountService(container.uow, container.clock),
        eraser=DataEraser(container.uow, container.object_store, sessions, container.session_state),
        admission=SessionAdmission(
            per_user_per_minute=settings.conversation.session_creations_per_user_per_minute,
            per_address_per_minute=settings.conversation.session_creations_per_address_per_minute,
            now=container.clock.monotonic,
        ),
        live=build_live(container, replies, hub),
        finetune=finetune_exporter(container),
        retention=build_retention(container),
        realtime=realtime_deps(container, replies),
        openai=openai_compat(container),
    )


def retention_policy(settings: RetentionSettings) -> RetentionPolicy:
    """How long each kind of audio is kept (docs/security.md, "Retention")."""
    return RetentionPolicy(
        raw_input=timedelta(days=settings.raw_input_days),
        synthesized=timedelta(days=settings.synthesized_days),
        archive_after=timedelta(days=settings.archive_after_days) if settings.archive else None,
    )


def build_retention(container: Container, object_store: ObjectStore | None = None) -> RetentionSweeper:
    """The retention sweep over the container's rows and objects (or ``object_store``'s): the Opus
    archiver, the job lock shared by the replicas (PostgreSQL's advisory lock), Prometheus metrics."""
    from avatar.infrastructure.metrics import PrometheusRetentionMetrics
    from avatar.infrastructure.retention import OpusArchiver, job_lock_for

    settings = container.settings.retention
    return RetentionSweeper(
        container.uow,
        object_store or container.object_store,
        container.clock,
        retention_policy(settings),
        OpusArchiver(settings.opus_bitrate),
        job_lock_for(container.uow),
        PrometheusRetentionMetrics(),
    )


def openai_compat(container: Container) -> OpenAICompat:
    """The use cases of the OpenAI-compatible endpoints over the container's adapters
    (docs/openai.md); the persona file is read here, so a mistake in it stops the start-up."""
    from avatar.infrastructure.audio_encoding import PyAVAudioEncoder

    settings = container.settings
    limits = TranscriptionLimits(settings.openai.max_upload_mb * 1024 * 1024, settings.openai.max_audio_s)

    async def reference_of(profile_id: uuid.UUID) -> VoiceReference:
        return await voice_reference(container.uow, container.object_store, profile_id)

    return OpenAICompat(
        transcriber=FileTranscriber(container.recognizer, container.sample_decoder, limits),
        speech=OpenAISpeech(
            container.fast_tts,
            container.hq_tts,
            container.uow,
            reference_of,
            max_chars=settings.openai.max_speech_chars,
        ),
        chat=OpenAIChat(
            container.chat_model,
            container.text_embedder,
            container.uow,
            load_persona(settings.llm.persona_file),
            brain_config(settings),
            avatar_model=settings.openai.avatar_model,
            base_model=settings.llm.model,
        ),
        encoder=PyAVAudioEncoder(),
    )


@contextlib.asynccontextmanager
async def running(
    settings: Settings, container: Container | None = None
) -> AsyncIterator[tuple[Container, Services]]:
    """Everything an app needs for its life: the container (built from ``settings`` when not
    given, and then closed at the end), the services, and the started task queue."""
    owned = container is None
    resolve_secrets(settings)  # tokens are signed with these even when the adapters are given
    c = container if container is not None else await build_container(settings)
    try:
        services = build_services(c)
        await start_vtube_studio_bridge(c, services.avatar_hub)
        if services.live is not None:
            from avatar.infrastructure.secrets import live_keys

            services.live_keys = live_keys(settings)
        if c.notifier is not None:
            await c.notifier.start()
        await c.queue.start()
        if c.storage_spool is not None:
            c.storage_spool.start()  # replays what a previous process left first
        if services.live is not None:
            services.live.start()
        scheduler = None
        retention = settings.retention
        if retention.enabled and services.retention is not None:
            # Every process may run it; the job lock lets one sweep at a time (docs/security.md).
            scheduler = RetentionScheduler(
                services.retention, interval_s=retention.interval_s, first_delay_s=retention.first_run_delay_s
            )
            scheduler.start()
        try:
            yield c, services
        finally:
            if scheduler is not None:
                await scheduler.aclose()
            await c.queue.stop()
            if c.notifier is not None:
                await c.notifier.aclose()
            try:
                await services.aclose()
            except Exception:
                log.exception("error while ending the live sessions")
            if c.storage_spool is not None:
                await c.storage_spool.aclose()
    finally:
        if owned:
            await c.aclose()


def avatar_hub(settings: Settings) -> AvatarHub:
    """The avatar event hub (docs/avatar-control.md). Reading ``config/avatar_poses.toml`` here makes
    a mistake in it stop the start-up with a message naming the key. The conversation reports to
    the hub through ``ConversationDeps.observer``; ``WS /ws/{id}/avatar`` and the VTube Studio
    bridge subscribe."""
    return AvatarHub(load_pose_config(settings.vts.poses_file))


async def start_vtube_studio_bridge(container: Container, hub: AvatarHub) -> None:
    """Start the VTube Studio bridge when ``AVATAR_VTS__ENABLED`` (stopped by ``aclose``)."""
    settings = container.settings.vts
    if not settings.enabled or container.vtube_studio is not None:
        return
    from avatar.infrastructure.vtube_studio import VTubeStudioBridge

    bridge = VTubeStudioBridge(settings, hub.subscribe_stage, hub.poses)
    await bridge.start()
    container.vtube_studio = bridge
    container.on_close(bridge.aclose)


def voice_styled(settings: Settings, synthesizer: SpeechSynthesizer) -> StyledSynthesizer:
    """``synthesizer`` speaking each reply in its emotion's style from the persona file."""
    return StyledSynthesizer(synthesizer, load_voice_styles(settings.llm.persona_file))


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """A background-work process (``avatar worker``): the HQ pass and prosody analysis from the
    Redis queue, results to the clients through the relay, the retention sweep (one process at a
    time), no sockets served; until ``stop``."""
    if settings.queue.kind != "redis":
        raise ValueError("a worker shares the Redis queue of the orchestrators: set AVATAR_QUEUE__KIND=redis")
    settings.queue.consume = True
    async with running(settings):
        log.info("worker started: consuming the HQ and prosody queues")
        await stop.wait()
