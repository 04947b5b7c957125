"""In-memory fakes that satisfy the application's ports and record what they received.

One file for every port (STYLE.md): unit tests build a ``Container`` from these instead of
mocking. The engines and storage are the instant engine set of the package
(``avatar.infrastructure.instant``) with recording and failure injection added here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from avatar.application.conversation.events import ServerMessage
from avatar.application.ports.asr import TranscriptEvent, TranscriptionTask
from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatMessage
from avatar.application.ports.prosody import ProsodyResult
from avatar.application.ports.queue import TaskHandler
from avatar.application.ports.tts import SynthesisRequest
from avatar.bootstrap import Container
from avatar.domain.errors import CapacityError
from avatar.domain.models import AudioChunk, SegmentTiming, Transcription, TTSMode
from avatar.infrastructure.instant import (
    InMemoryDatabase,
    InMemoryObjectStore,
    InMemoryUnitOfWork,
    InstantChatModel,
    InstantProsodyAnalyzer,
    InstantRecognitionStream,
    InstantRecognizer,
    InstantSpeakerEncoder,
    InstantSynthesisStream,
    InstantSynthesizer,
    InstantTextEmbedder,
)
from avatar.infrastructure.speaker import VoiceSampleDecoder
from avatar.presentation.wire import to_wire
from avatar.settings import Settings

# --- clock ----------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


# --- engines: the instant engine set, recording what it was asked ---------------------------


class FakeRecognitionStream(InstantRecognitionStream):
    """Records every chunk pushed (silent ones too)."""

    def __init__(self, owner: InstantRecognizer, language: str | None) -> None:
        super().__init__(owner, language)
        self.pushed: list[AudioChunk] = []

    async def push_audio(self, chunk: AudioChunk) -> None:
        self.pushed.append(chunk)
        await super().push_audio(chunk)

    def report(self, event: TranscriptEvent) -> None:
        """Deliver ``event`` as if the recognizer had produced it (e.g. an ``ERROR`` it reports)."""
        self._queue.put_nowait(event)


class FakeRecognizer(InstantRecognizer):
    """Records the streams it opened and the clips it transcribed."""

    def __init__(
        self,
        texts: Sequence[str] = ("hello there",),
        utterance_ms: float = 1000.0,
        silence_rms: float | None = None,
    ) -> None:
        super().__init__(texts, utterance_ms, silence_rms)
        self.streams: list[FakeRecognitionStream] = []
        self.transcribed: list[tuple[int, int]] = []

    async def open_stream(self, *, language: str | None = None) -> FakeRecognitionStream:
        stream = FakeRecognitionStream(self, language)
        self.streams.append(stream)
        return stream

    async def transcribe(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: TranscriptionTask = "transcribe",
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> Transcription:
        self.transcribed.append((len(pcm), sample_rate))
        return await super().transcribe(
            pcm,
            sample_rate,
            language=language,
            prompt=prompt,
            temperature=temperature,
            task=task,
            on_segment=on_segment,
        )


class FakeChatModel(InstantChatModel):
    """Records every prompt; raises ``fail_with`` instead of replying when it is set."""

    def __init__(
        self,
        replies: Sequence[str] = ("[happy] Hello! Nice to meet you.",),
        token_delay_s: float = 0.0,
        fail_with: Exception | None = None,
    ) -> None:
        super().__init__(replies, token_delay_s)
        self.fail_with = fail_with
        self.calls: list[list[ChatMessage]] = []

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        session: uuid.UUID | None = None,
    ) -> AsyncGenerator[str, None]:
        self.calls.append(list(messages))
        if self.fail_with is not None:
            raise self.fail_with
        reply = super().stream_chat(messages, max_tokens=max_tokens, temperature=temperature)
        async with contextlib.aclosing(reply):  # an abandoned reply is closed at once, as a model's
            async for token in reply:
                yield token


class FakeTextEmbedder(InstantTextEmbedder):
    def __init__(self, dim: int = 512) -> None:
        super().__init__(dim)
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return await super().embed(texts)


class FakeSynthesizer(InstantSynthesizer):
    """Records requests and streams; ``fail`` makes it raise, ``notice`` reports a substituted voice."""

    def __init__(
        self,
        mode: TTSMode = TTSMode.FAST,
        *,
        delay_s: float = 0.0,
        fail: bool = False,
        notice: str | None = None,
    ) -> None:
        super().__init__(mode, delay_s=delay_s)
        self.fail = fail
        self.notice = notice
        self.requests: list[SynthesisRequest] = []
        self.streams: list[InstantSynthesisStream] = []

    async def synthesize(self, request: SynthesisRequest) -> InstantSynthesisStream:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("fake synthesizer failure")
        stream = InstantSynthesisStream(
            request, engine="fake", voice="fake-voice", delay_s=self.delay_s, notice=self.notice
        )
        self.streams.append(stream)
        return stream

    async def health(self) -> ComponentHealth:
        return ComponentHealth(f"tts_{self.mode.value}", not self.fail, "fake")


class FakeSpeakerEncoder(InstantSpeakerEncoder):
    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        self.calls += 1
        return await super().embed(pcm, sample_rate)


class FakeProsodyAnalyzer(InstantProsodyAnalyzer):
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Mapping[str, float] | None]] = []

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        self.calls.append((len(pcm), sample_rate, baseline))
        return await super().analyze(pcm, sample_rate, baseline=baseline)


# --- persistence: in memory, with failure injection ------------------------------------------


class FakeObjectStore(InMemoryObjectStore):
    """The next ``fail_puts`` puts raise a connection error."""

    def __init__(self, bucket: str = "avatar-audio") -> None:
        super().__init__(bucket)
        self.fail_puts = 0

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("fake object store blip")
        return await super().put(key, data, content_type)


class FakeUnitOfWork(InMemoryUnitOfWork):
    async def __aenter__(self) -> Self:
        db = self.db
        if isinstance(db, FakeDatabase) and db.fail_next:
            db.fail_next -= 1
            raise ConnectionError("fake database blip")
        return await super().__aenter__()


class FakeDatabase(InMemoryDatabase):
    """The next ``fail_next`` units of work fail on entry with a connection error."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0

    def __call__(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


# --- queue and notifications ------------------------------------------------------------------


class FakeTaskQueue:
    """Runs handlers in-process as tasks; records every published payload."""

    def __init__(self, max_pending: int = 100) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, list[TaskHandler]] = defaultdict(list)
        self.max_pending = max_pending
        self.started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> str:
        if len(self._tasks) >= self.max_pending:
            raise CapacityError("fake queue full")
        self.published.append((topic, dict(payload)))
        task_id = str(uuid.uuid4())
        if self.started:
            for handler in self.handlers.get(topic, []):
                task = asyncio.create_task(self._run(handler, dict(payload)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return task_id

    async def _run(self, handler: TaskHandler, payload: dict[str, Any]) -> None:
        try:
            await handler(payload)
        except Exception as exc:  # recorded for the test to inspect
            self.errors.append(exc)

    def subscribe(self, topic: str, handler: TaskHandler, *, concurrency: int = 1) -> None:
        self.handlers[topic].append(handler)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def pending(self, topic: str) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every handler started so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class FakeNotifier:
    """Keeps each notification as the client would decode it (a JSON object)."""

    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, dict[str, Any]]] = []

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None:
        self.sent.append((session_id, dict(to_wire(message))))

    # As a container's ``notifier`` it satisfies ``NotificationRelay``: nothing is relayed, every
    # message is recorded instead of reaching a client.
    def bind(self, local: object) -> None:
        self.local = local

    async def start(self) -> None:
        return None

    async def claim(self, session_id: uuid.UUID) -> None:
        return None

    async def aclose(self) -> None:
        return None


# --- a whole container ------------------------------------------------------------------------


def fake_container(settings: Settings | None = None, **overrides: Any) -> Container:
    """A :class:`Container` of fakes; pass keyword overrides to swap any adapter."""
    parts: dict[str, Any] = {
        "settings": settings or Settings(),
        "clock": FakeClock(),
        "recognizer": FakeRecognizer(),
        "chat_model": FakeChatModel(),
        "text_embedder": FakeTextEmbedder(),
        "fast_tts": FakeSynthesizer(TTSMode.FAST),
        "hq_tts": FakeSynthesizer(TTSMode.HQ),
        "speaker_encoder": FakeSpeakerEncoder(),
        "prosody": FakeProsodyAnalyzer(),
        "uow": FakeDatabase(),
        "object_store": FakeObjectStore(),
        "queue": FakeTaskQueue(),
        "sample_decoder": VoiceSampleDecoder(),
        "metrics": RecordingConversationMetrics(),
    }
    parts.update(overrides)
    return Container(**parts)


# --- conversation (pipeline metrics) ----------------------------------------------------------


class RecordingConversationMetrics:
    """Satisfies ``ConversationMetrics``; keeps every observation for assertions."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self.e2e: list[float] = []
        self.active: list[int] = []
        self.write_failures: list[str] = []
        self.interruptions = 0
        self.shed_chunks = 0
        self.skipped_tasks: list[str] = []

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.append((stage, seconds))

    def observe_e2e(self, seconds: float) -> None:
        self.e2e.append(seconds)

    def set_active_sessions(self, count: int) -> None:
        self.active.append(count)

    def write_failed(self, what: str) -> None:
        self.write_failures.append(what)

    def interrupted(self) -> None:
        self.interruptions += 1

    def audio_shed(self, chunks: int) -> None:
        self.shed_chunks += chunks

    def task_skipped(self, topic: str) -> None:
        self.skipped_tasks.append(topic)
