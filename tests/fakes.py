"""In-memory fakes that satisfy the application's ports and record what they received.

One file for every port (STYLE.md): unit tests build a ``Container`` from these instead of
mocking. Each fake is small, deterministic and honest about what it does.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import math
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from avatar.application.ports.asr import TranscriptEvent, TranscriptEventKind
from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatMessage
from avatar.application.ports.prosody import ProsodyResult
from avatar.application.ports.queue import TaskHandler
from avatar.application.ports.storage import MemoryHit
from avatar.application.ports.tts import SynthesisRequest, VoiceInfo
from avatar.bootstrap import Container
from avatar.domain.errors import CapacityError, NotFoundError
from avatar.domain.models import (
    AudioChunk,
    ConversationTurn,
    ProsodyScore,
    Session,
    SynthesizedAudio,
    Transcription,
    TTSMode,
    VoiceProfile,
)
from avatar.infrastructure.speaker import VoiceSampleDecoder
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


# --- speech recognition ---------------------------------------------------------------------


NO_SPEECH_MESSAGE = "no speech was heard"


class FakeRecognitionStream:
    """Endpoints on a scripted rule: after ``utterance_ms`` of pushed audio it emits
    SPEECH_STARTED, one PARTIAL and a FINAL with the next scripted text."""

    def __init__(self, owner: FakeRecognizer, language: str | None) -> None:
        self.owner = owner
        self.language = language
        self.pushed: list[AudioChunk] = []
        self._queue: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._audio_ms = 0.0
        self._pcm = bytearray()
        self._started = False
        self.closed = False

    async def push_audio(self, chunk: AudioChunk) -> None:
        self.pushed.append(chunk)
        self._audio_ms += chunk.duration_ms
        self._pcm += chunk.pcm
        if not self._started:
            self._started = True
            await self._queue.put(
                TranscriptEvent(TranscriptEventKind.SPEECH_STARTED, stream_time_ms=self._audio_ms)
            )
        if self._audio_ms >= self.owner.utterance_ms:
            await self._finish()

    async def _finish(self) -> None:
        text = self.owner.next_text()
        await self._queue.put(
            TranscriptEvent(
                TranscriptEventKind.PARTIAL,
                Transcription(text=text.split(" ")[0], is_final=False, confidence=0.5),
            )
        )
        await self._queue.put(
            TranscriptEvent(
                TranscriptEventKind.FINAL,
                Transcription(text=text, is_final=True, confidence=0.9, language=self.language or "en"),
                utterance_pcm=bytes(self._pcm),
            )
        )
        self._audio_ms = 0.0
        self._pcm = bytearray()
        self._started = False

    async def end_input(self) -> None:
        if self._started:
            await self._finish()
        else:  # as the real engine: a push-to-talk release with nothing said
            kind, code = TranscriptEventKind.ERROR, "NO_SPEECH"
            await self._queue.put(TranscriptEvent(kind, error_code=code, message=NO_SPEECH_MESSAGE))

    async def aclose(self) -> None:
        self.closed = True
        await self._queue.put(None)

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event


class FakeRecognizer:
    def __init__(self, texts: Sequence[str] = ("hello there",), utterance_ms: float = 1000.0) -> None:
        self.texts = list(texts)
        self.utterance_ms = utterance_ms
        self.streams: list[FakeRecognitionStream] = []
        self.transcribed: list[tuple[int, int]] = []
        self._next = 0

    def next_text(self) -> str:
        text = self.texts[self._next % len(self.texts)]
        self._next += 1
        return text

    async def open_stream(self, *, language: str | None = None) -> FakeRecognitionStream:
        stream = FakeRecognitionStream(self, language)
        self.streams.append(stream)
        return stream

    async def transcribe(
        self, pcm: bytes, sample_rate: int, *, language: str | None = None, prompt: str | None = None
    ) -> Transcription:
        self.transcribed.append((len(pcm), sample_rate))
        return Transcription(text=self.next_text(), is_final=True, confidence=0.9, language=language or "en")

    async def health(self) -> ComponentHealth:
        return ComponentHealth("asr", True, "fake")


# --- chat model and embeddings ------------------------------------------------------------------


class FakeChatModel:
    """Streams a scripted reply word by word; records every prompt it was sent."""

    def __init__(
        self,
        replies: Sequence[str] = ("[happy] Hello! Nice to meet you.",),
        token_delay_s: float = 0.0,
        fail_with: Exception | None = None,
    ) -> None:
        self.replies = list(replies)
        self.token_delay_s = token_delay_s
        self.fail_with = fail_with
        self.calls: list[list[ChatMessage]] = []
        self.cancelled = 0
        self._next = 0

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        self.calls.append(list(messages))
        if self.fail_with is not None:
            raise self.fail_with
        reply = self.replies[self._next % len(self.replies)]
        self._next += 1
        words = reply.split(" ")
        try:
            for i, word in enumerate(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield word if i == 0 else " " + word
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4) if text else 0

    async def health(self) -> ComponentHealth:
        return ComponentHealth("llm", True, "fake")


class FakeTextEmbedder:
    """Bag-of-words hashing embedder: texts sharing words are close. Deterministic."""

    def __init__(self, dim: int = 512) -> None:
        self._dim = dim
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            vec = [0.0] * self._dim
            for word in text.lower().split():
                h = int(hashlib.sha256(word.strip(".,!?").encode()).hexdigest(), 16)
                vec[h % self._dim] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


# --- speech synthesis -------------------------------------------------------------------------


@dataclass
class FakeSynthesisStream:
    request: SynthesisRequest
    sample_rate: int = 16000
    engine: str = "fake"
    voice: str = "fake-voice"
    notice: str | None = None
    chunk_ms: int = 100
    delay_s: float = 0.0
    closed: bool = False

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        # ~60 ms of a 220 Hz tone per character, in chunk_ms pieces.
        total = max(1, len(self.request.text)) * 60 * self.sample_rate // 1000
        per = self.chunk_ms * self.sample_rate // 1000
        seq = 0
        for start in range(0, total, per):
            if self.closed:
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            n = min(per, total - start)
            samples = [
                int(8000 * math.sin(2 * math.pi * 220 * (start + i) / self.sample_rate)) for i in range(n)
            ]
            pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
            yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, sequence=seq)
            seq += 1

    async def aclose(self) -> None:
        self.closed = True


class FakeSynthesizer:
    def __init__(
        self,
        mode: TTSMode = TTSMode.FAST,
        *,
        delay_s: float = 0.0,
        fail: bool = False,
        notice: str | None = None,
    ) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.fail = fail
        self.notice = notice
        self.requests: list[SynthesisRequest] = []
        self.streams: list[FakeSynthesisStream] = []

    async def synthesize(self, request: SynthesisRequest) -> FakeSynthesisStream:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("fake synthesizer failure")
        stream = FakeSynthesisStream(request, delay_s=self.delay_s, notice=self.notice)
        self.streams.append(stream)
        return stream

    async def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("fake-voice", "Fake", ("en",), self.mode, "fake")]

    async def health(self) -> ComponentHealth:
        return ComponentHealth(f"tts_{self.mode.value}", not self.fail, "fake")


class FakeSpeakerEncoder:
    """Embeds a clip by a hash of its bytes (same clip -> same vector)."""

    def __init__(self) -> None:
        self.calls = 0

    @property
    def dim(self) -> int:
        return 256

    async def embed(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        self.calls += 1
        seed = hashlib.sha256(pcm[:4096] + sample_rate.to_bytes(4, "little")).digest()
        raw = [((seed[i % len(seed)] + i) % 97) / 97.0 - 0.5 for i in range(256)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        return tuple(v / norm for v in raw)


class FakeProsodyAnalyzer:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Mapping[str, float] | None]] = []

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        self.calls.append((len(pcm), sample_rate, baseline))
        duration = len(pcm) / 2 / sample_rate
        if duration < 0.5:
            return ProsodyResult(
                50.0, 50.0, 50.0, {"duration_s": duration}, reliable=False, reason="too_short"
            )
        return ProsodyResult(70.0, 60.0, 65.0, {"duration_s": duration, "f0_mean_hz": 180.0})

    async def health(self) -> ComponentHealth:
        return ComponentHealth("prosody", True, "fake")


# --- persistence ------------------------------------------------------------------------------


class FakeObjectStore:
    def __init__(self, bucket: str = "avatar-audio") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.fail_puts = 0

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("fake object store blip")
        self.objects[key] = (bytes(data), content_type)
        return f"s3://{self.bucket}/{key}"

    async def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise NotFoundError(f"no object {key}")
        return self.objects[key][0]

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            del self.objects[k]
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return f"http://fake-store/{self.bucket}/{key}?expires={int(expires.total_seconds())}"

    async def health(self) -> ComponentHealth:
        return ComponentHealth("object_store", True, "fake")


@dataclass
class _Tables:
    sessions: dict[uuid.UUID, Session] = field(default_factory=dict)
    turns: dict[uuid.UUID, ConversationTurn] = field(default_factory=dict)
    transcriptions: dict[uuid.UUID, tuple[uuid.UUID, Transcription, str | None, list[str]]] = field(
        default_factory=dict
    )
    prosody: dict[uuid.UUID, ProsodyScore] = field(default_factory=dict)
    profiles: dict[uuid.UUID, VoiceProfile] = field(default_factory=dict)
    synthesized: dict[uuid.UUID, SynthesizedAudio] = field(default_factory=dict)
    memories: list[tuple[uuid.UUID, uuid.UUID | None, str, str, list[float]]] = field(default_factory=list)
    summaries: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


class _Repo:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow

    @property
    def t(self) -> _Tables:
        return self.uow.staged


class FakeSessionRepository(_Repo):
    async def add(self, session: Session) -> None:
        self.t.sessions[session.session_id] = replace(session)

    async def get(self, session_id: uuid.UUID) -> Session | None:
        s = self.t.sessions.get(session_id)
        return replace(s) if s else None

    async def update(self, session: Session) -> None:
        if session.session_id not in self.t.sessions:
            raise NotFoundError(f"session {session.session_id} not found")
        self.t.sessions[session.session_id] = replace(session)

    async def list_recent(self, limit: int = 50) -> list[Session]:
        return sorted(self.t.sessions.values(), key=lambda s: s.start_time, reverse=True)[:limit]


class FakeTurnRepository(_Repo):
    async def add(self, turn: ConversationTurn) -> None:
        for other in self.t.turns.values():
            if other.session_id == turn.session_id and other.turn_number == turn.turn_number:
                raise ValueError("duplicate (session_id, turn_number)")
        self.t.turns[turn.turn_id] = replace(turn)

    async def update(self, turn: ConversationTurn) -> None:
        self.t.turns[turn.turn_id] = replace(turn)

    async def get(self, turn_id: uuid.UUID) -> ConversationTurn | None:
        t = self.t.turns.get(turn_id)
        return replace(t) if t else None

    async def list_for_session(self, session_id: uuid.UUID) -> list[ConversationTurn]:
        return sorted(
            (t for t in self.t.turns.values() if t.session_id == session_id), key=lambda t: t.turn_number
        )


class FakeTranscriptionRepository(_Repo):
    async def add(
        self,
        turn_id: uuid.UUID,
        transcription: Transcription,
        audio_url: str | None,
        partial_results: Sequence[str],
    ) -> None:
        self.t.transcriptions[transcription.transcription_id] = (
            turn_id,
            transcription,
            audio_url,
            list(partial_results),
        )

    async def get(self, transcription_id: uuid.UUID) -> Transcription | None:
        row = self.t.transcriptions.get(transcription_id)
        return row[1] if row else None

    async def audio_url(self, transcription_id: uuid.UUID) -> str | None:
        row = self.t.transcriptions.get(transcription_id)
        return row[2] if row else None


class FakeProsodyRepository(_Repo):
    async def add(self, score: ProsodyScore) -> None:
        self.t.prosody[score.score_id] = score

    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None:
        return next((s for s in self.t.prosody.values() if s.transcription_id == transcription_id), None)

    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]:
        turn_ids = {tid for tid, t in self.t.turns.items() if t.session_id == session_id}
        ids = {tr_id for tr_id, row in self.t.transcriptions.items() if row[0] in turn_ids}
        return sorted(
            (s for s in self.t.prosody.values() if s.transcription_id in ids), key=lambda s: s.analyzed_at
        )


class FakeVoiceProfileRepository(_Repo):
    async def add(self, profile: VoiceProfile) -> None:
        self.t.profiles[profile.profile_id] = profile

    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None:
        return self.t.profiles.get(profile_id)

    async def list(self) -> builtins.list[VoiceProfile]:
        return [*self.t.profiles.values()]

    async def delete(self, profile_id: uuid.UUID) -> bool:
        return self.t.profiles.pop(profile_id, None) is not None

    async def nearest(
        self, embedding: Sequence[float], limit: int = 5
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        ranked = sorted(
            ((p, _cosine(p.embedding, embedding)) for p in self.t.profiles.values()),
            key=lambda pair: pair[1],
            reverse=True,
        )
        return ranked[:limit]


class FakeSynthesizedAudioRepository(_Repo):
    async def add(self, audio: SynthesizedAudio) -> None:
        self.t.synthesized[audio.audio_id] = audio

    async def list_for_turn(self, turn_id: uuid.UUID) -> list[SynthesizedAudio]:
        return [a for a in self.t.synthesized.values() if a.turn_id == turn_id]


class FakeMemoryRepository(_Repo):
    async def add(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        role: str,
        text: str,
        embedding: Sequence[float],
    ) -> None:
        self.t.memories.append((session_id, turn_id, role, text, list(embedding)))

    async def search(
        self, embedding: Sequence[float], limit: int = 5, session_id: uuid.UUID | None = None
    ) -> list[MemoryHit]:
        rows = [m for m in self.t.memories if session_id is None or m[0] == session_id]
        hits = [MemoryHit(m[0], m[1], m[2], m[3], _cosine(m[4], embedding)) for m in rows]
        return sorted(hits, key=lambda h: h.score, reverse=True)[:limit]


class FakeSummaryRepository(_Repo):
    async def save(self, session_id: uuid.UUID, summary: str, covered_turns: int) -> None:
        self.t.summaries[session_id] = (summary, covered_turns)

    async def load(self, session_id: uuid.UUID) -> tuple[str, int] | None:
        return self.t.summaries.get(session_id)


class FakeUnitOfWork:
    """Transactional over a shared :class:`FakeDatabase`: changes are visible after ``commit``."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.staged = _Tables()
        self.sessions = FakeSessionRepository(self)
        self.turns = FakeTurnRepository(self)
        self.transcriptions = FakeTranscriptionRepository(self)
        self.prosody = FakeProsodyRepository(self)
        self.voice_profiles = FakeVoiceProfileRepository(self)
        self.synthesized = FakeSynthesizedAudioRepository(self)
        self.memories = FakeMemoryRepository(self)
        self.summaries = FakeSummaryRepository(self)
        self.committed = False

    async def __aenter__(self) -> Self:
        if self.db.fail_next:
            self.db.fail_next -= 1
            raise ConnectionError("fake database blip")
        self.staged = self.db.snapshot()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        self.db.tables = self.staged
        self.db.commits += 1
        self.staged = self.db.snapshot()
        self.committed = True

    async def rollback(self) -> None:
        self.staged = self.db.snapshot()


class FakeDatabase:
    """The shared state behind every :class:`FakeUnitOfWork`; also the factory (call it)."""

    def __init__(self) -> None:
        self.tables = _Tables()
        self.commits = 0
        self.fail_next = 0

    def snapshot(self) -> _Tables:
        t = self.tables
        return _Tables(
            dict(t.sessions),
            dict(t.turns),
            dict(t.transcriptions),
            dict(t.prosody),
            dict(t.profiles),
            dict(t.synthesized),
            list(t.memories),
            dict(t.summaries),
        )

    def __call__(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    async def health(self) -> ComponentHealth:
        return ComponentHealth("database", True, "fake")


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
    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, dict[str, Any]]] = []

    async def notify(self, session_id: uuid.UUID, message: Mapping[str, Any]) -> None:
        self.sent.append((session_id, dict(message)))


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


# --- conversation (capacity benchmark: a fake recognizer with a crude VAD) ---------------------


class _EnergyGatedStream(FakeRecognitionStream):
    def __init__(self, owner: EnergyGatedRecognizer, language: str | None) -> None:
        super().__init__(owner, language)
        self.threshold = owner.threshold

    async def push_audio(self, chunk: AudioChunk) -> None:
        samples = memoryview(chunk.pcm).cast("h")
        rms = math.sqrt(sum(s * s for s in samples) / len(samples)) if len(samples) else 0.0
        if rms < self.threshold:  # silence neither starts nor extends an utterance
            self.pushed.append(chunk)
            return
        await super().push_audio(chunk)


class EnergyGatedRecognizer(FakeRecognizer):
    """A :class:`FakeRecognizer` whose streams ignore chunks quieter than ``threshold`` RMS, so a
    client that keeps streaming its (silent) microphone after speaking does not start a new
    utterance -- and barge in on the reply -- the way the plain fake would."""

    def __init__(
        self, texts: Sequence[str] = ("hello there",), utterance_ms: float = 1000.0, threshold: float = 200.0
    ) -> None:
        super().__init__(texts, utterance_ms)
        self.threshold = threshold

    async def open_stream(self, *, language: str | None = None) -> FakeRecognitionStream:
        stream = _EnergyGatedStream(self, language)
        self.streams.append(stream)
        return stream
