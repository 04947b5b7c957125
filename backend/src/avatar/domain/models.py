"""Domain entities and value objects in the design's ubiquitous language (docs/design-notes.md §2, §5).

Pure data and pure logic: nothing here performs I/O or knows about a framework.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from avatar.domain.errors import DomainError


class SessionStatus(enum.StrEnum):
    """Lifecycle of one conversation."""

    ACTIVE = "active"
    ENDED = "ended"
    ERROR = "error"


class Role(enum.StrEnum):
    """What a user may do: an ``admin`` sees and manages everyone's data (audited), a ``user``
    only their own (docs/security.md)."""

    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True, slots=True)
class User:
    """A person with an account; owns sessions, voice profiles and everything under them."""

    user_id: uuid.UUID
    name: str
    role: Role = Role.USER
    created_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, owner_id: uuid.UUID | None) -> bool:
        """Whether this user may read or change something owned by ``owner_id``."""
        return self.is_admin or (owner_id is not None and owner_id == self.user_id)


class TTSMode(enum.StrEnum):
    """Synthesis tier: ``fast`` streams at once, ``hq`` is the background high-quality pass."""

    FAST = "fast"
    HQ = "hq"


class Emotion(enum.StrEnum):
    """The emotion a reply is spoken and shown with (docs/design-notes.md §11)."""

    HAPPY = "happy"
    SAD = "sad"
    ANGRY = "angry"
    SURPRISED = "surprised"
    NEUTRAL = "neutral"
    EXCITED = "excited"

    @classmethod
    def parse(cls, raw: str | None, default: Emotion | None = None) -> Emotion:
        """Read an emotion label leniently (case, whitespace, a few synonyms).

        Args:
            raw: The label as a model wrote it.
            default: What to return when ``raw`` is missing or unknown (``NEUTRAL`` if omitted).
        """
        fallback = default or cls.NEUTRAL
        if not raw:
            return fallback
        key = raw.strip().strip("[]<>():*\"'").lower()
        return cls.label(key) or fallback

    @classmethod
    def label(cls, word: str) -> Emotion | None:
        """The emotion a label names: one of the six, or a word for a feeling that maps to one
        (``EMOTION_WORDS``); ``None`` for anything else (e.g. a stage direction such as "smiles")."""
        key = word.strip().lower()
        try:
            return cls(key)
        except ValueError:
            named = EMOTION_WORDS.get(key)
            return cls(named) if named is not None else None


#: Words for feelings that models write as their reply's tag instead of one of the six emotions
#: (SmolLM2-135M, the embedded default, opens many replies with "[displeased]"), mapped to the
#: nearest of the six. A tag it names is the reply's emotion at once; any other bracketed word is
#: taken as a stage direction and the emotion is guessed from the reply's first clause.
_FEELINGS = {
    "happy": "joy joyful glad pleased delighted cheerful content amused playful grateful thankful "
    "friendly warm proud happiness",
    "sad": "upset unhappy sorry disappointed sympathetic concerned worried lonely melancholy hurt "
    "apologetic sadness gloomy",
    "angry": "mad annoyed irritated frustrated displeased furious grumpy indignant disgusted anger",
    "surprised": "surprise shocked amazed astonished startled astounded",
    "excited": "excitement thrilled enthusiastic eager ecstatic energetic",
    "neutral": "calm thoughtful curious serious relaxed pensive",
}
EMOTION_WORDS: dict[str, str] = {
    word: emotion for emotion, words in _FEELINGS.items() for word in words.split()
}


def new_id() -> uuid.UUID:
    """A fresh random identifier (UUID4, unrelated to any real identity, docs/design-notes.md §8)."""
    return uuid.uuid4()


@dataclass(frozen=True, slots=True)
class PhonemeMark:
    """A phoneme of synthesized audio and where it sounds in its chunk, in ms from its start."""

    phoneme: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of PCM16 mono audio flowing through the pipeline.

    Attributes:
        pcm: Little-endian signed 16-bit samples, mono.
        sample_rate: Samples per second of ``pcm``.
        timestamp_ms: Client or stream time of the first sample, in milliseconds.
        sequence: Position of this chunk in its stream (0-based).
        phonemes: Synthesized audio only: the TTS engine's phoneme timing, when it gives any.
    """

    pcm: bytes
    sample_rate: int
    timestamp_ms: int = 0
    sequence: int = 0
    phonemes: tuple[PhonemeMark, ...] = ()

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise DomainError("sample_rate must be positive")
        if len(self.pcm) % 2:
            raise DomainError("PCM16 audio must have an even number of bytes")

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.num_samples / self.sample_rate


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One recognized word with its position in the utterance (seconds)."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class SegmentTiming:
    """One decoded segment with its position in the utterance (seconds)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Transcription:
    """The recognized text of one user utterance (partial while speaking, final at the endpoint).

    Attributes:
        text: Recognized text (hallucination-filtered).
        is_final: Whether the utterance has ended.
        confidence: 0..1, from the decoder's token probabilities.
        language: Detected or fixed ISO 639-1 code.
        latency_ms: Time from the audio it covers being available to this result.
        low_confidence: Set when the result is kept but should be shown as uncertain
            (docs/design-notes.md §9).
        words: Word timings, when the engine produced them.
        segments: Segment timings.
        audio_start_ms: Stream time where the utterance started.
        audio_end_ms: Stream time where the utterance ended (final) or the audio seen so far.
        speech_end_ms: Final only: stream time of the utterance's last loud sample, where a
            listener hears the person stop (the VAD decides later and the recognizer is given a
            tail of silence); 0 when unknown (docs/adr/0014-voice-latency.md).
    """

    text: str
    is_final: bool
    confidence: float
    language: str | None = None
    latency_ms: float = 0.0
    low_confidence: bool = False
    words: tuple[WordTiming, ...] = ()
    segments: tuple[SegmentTiming, ...] = ()
    audio_start_ms: float = 0.0
    audio_end_ms: float = 0.0
    speech_end_ms: float = 0.0
    transcription_id: uuid.UUID = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise DomainError(f"confidence must be within 0..1, got {self.confidence}")


@dataclass(slots=True)
class Session:
    """One conversation with a person; owns many turns (docs/design-notes.md §5 ``sessions``)."""

    session_id: uuid.UUID
    start_time: datetime
    status: SessionStatus = SessionStatus.ACTIVE
    end_time: datetime | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    created_at: datetime | None = None
    #: The user the conversation belongs to (docs/security.md, "Accounts and ownership"); its
    #: turns, transcriptions, audio, prosody, memories and summary belong to the same user.
    owner_id: uuid.UUID | None = None

    @classmethod
    def start(
        cls, now: datetime, metadata: dict[str, object] | None = None, *, owner_id: uuid.UUID | None = None
    ) -> Session:
        return cls(
            session_id=new_id(),
            start_time=now,
            metadata=dict(metadata or {}),
            created_at=now,
            owner_id=owner_id,
        )

    def end(self, now: datetime, *, error: bool = False) -> None:
        """Close the session; ending twice keeps the first end time."""
        if self.status is not SessionStatus.ACTIVE:
            return
        self.status = SessionStatus.ERROR if error else SessionStatus.ENDED
        self.end_time = now

    @property
    def is_active(self) -> bool:
        return self.status is SessionStatus.ACTIVE


@dataclass(slots=True)
class ConversationTurn:
    """One user input and the AI's reply (docs/design-notes.md §5 ``conversation_turns``).

    ``ai_response`` holds only what the person actually heard when the reply was interrupted.
    ``stage_latency_ms`` records each pipeline stage (asr_final, llm_ttft, tts_first_chunk, ...).
    """

    turn_id: uuid.UUID
    session_id: uuid.UUID
    turn_number: int
    user_input: str
    ai_response: str = ""
    emotion: Emotion = Emotion.NEUTRAL
    interrupted: bool = False
    stage_latency_ms: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.turn_number < 1:
            raise DomainError("turn_number starts at 1")

    def complete(self, response: str, emotion: Emotion, *, interrupted: bool = False) -> None:
        self.ai_response = response
        self.emotion = emotion
        self.interrupted = interrupted


@dataclass(frozen=True, slots=True)
class ProsodyScore:
    """How the person spoke in one utterance, each score 0..100 (docs/design-notes.md §5 ``prosody_scores``).

    ``reliable`` is false (with ``reason``) for audio too short, silent, clipped or non-speech.
    """

    score_id: uuid.UUID
    transcription_id: uuid.UUID
    confidence: float
    stability: float
    affability: float
    features: dict[str, float | str | None]
    analyzed_at: datetime
    reliable: bool = True
    reason: str | None = None

    def __post_init__(self) -> None:
        for name in ("confidence", "stability", "affability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise DomainError(f"{name} must be within 0..100, got {value}")


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    """An uploaded voice sample and its speaker embedding (docs/design-notes.md §4, §5 ``voice_profiles``)."""

    profile_id: uuid.UUID
    name: str
    audio_url: str
    embedding: tuple[float, ...]
    duration_sec: float
    sample_rate: int
    transcript: str = ""
    user_id: uuid.UUID | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    created_at: datetime | None = None

    EMBEDDING_DIM = 256

    def __post_init__(self) -> None:
        if len(self.embedding) != self.EMBEDDING_DIM:
            raise DomainError(f"speaker embedding must have {self.EMBEDDING_DIM} values")
        if not self.name.strip():
            raise DomainError("a voice profile needs a name")


@dataclass(frozen=True, slots=True)
class TTSTask:
    """A request to speak ``text`` in one tier (docs/design-notes.md §2 ``TTSTask``)."""

    task_id: uuid.UUID
    turn_id: uuid.UUID
    text: str
    mode: TTSMode
    voice: str | None = None
    voice_profile_id: uuid.UUID | None = None
    language: str | None = None

    def as_hq(self) -> TTSTask:
        return replace(self, task_id=new_id(), mode=TTSMode.HQ)


@dataclass(frozen=True, slots=True)
class SynthesizedAudio:
    """A stored synthesis result (docs/design-notes.md §5 ``synthesized_audios``)."""

    audio_id: uuid.UUID
    turn_id: uuid.UUID
    mode: TTSMode
    audio_url: str
    duration_sec: float
    synthesis_time_ms: float
    voice_profile_id: uuid.UUID | None = None
    engine: str = ""
    voice: str = ""
    #: When the retention sweep removed the audio (docs/security.md, "Retention"); the row stays.
    expired_at: datetime | None = None
