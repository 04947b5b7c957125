"""Speech synthesis port: text in, audio chunks out, in a fast or a high-quality tier."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from avatar.application.ports.common import ComponentHealth
from avatar.domain.models import AudioChunk, Emotion, TTSMode


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice a synthesizer can speak with.

    Attributes:
        voice_id: ``engine:name``, what ``SynthesisRequest.voice`` takes.
        name: The engine's own name for the voice.
        languages: ISO 639-1 codes it speaks.
        mode: The tier it belongs to.
        engine: Engine name (``piper``, ``kokoro``, ``espeak``, ``f5``, ``cosyvoice``).
        can_clone: Whether the engine clones a reference clip instead of using a stock timbre.
    """

    voice_id: str
    name: str
    languages: tuple[str, ...]
    mode: TTSMode
    engine: str
    can_clone: bool = False
    #: Speaker embedding of the stock voice (256-dim), used to pick the closest one to a profile.
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class VoiceReference:
    """A reference clip for zero-shot cloning, with its transcript and speaker embedding."""

    pcm: bytes
    sample_rate: int
    transcript: str
    embedding: tuple[float, ...]
    profile_id: str = ""


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """One utterance to speak.

    Attributes:
        text: Plain text (no markup, no control characters), within the service's length limit.
        mode: ``fast`` streams at once; ``hq`` may degrade to fast, saying so in the stream's notice.
        voice: A ``voice_id``, or None for the tier's voice for the language.
        language: ISO 639-1 code, or None to detect it from the script.
        speed: 0.25..4.0, 1.0 is the voice's natural rate.
        reference: A voice profile: cloned where the engine can, else the closest stock voice.
        pitch: 0.5..2.0 frequency factor, 1.0 is the voice's own pitch.
        emotion: The reply's emotion; the voice style for it (persona file) sets speed and pitch
            (docs/avatar-control.md, "Emotion in the voice").
        instructions: A style in words ("speak cheerfully"): followed by engines that can
            (CosyVoice's instruct mode), ignored by the others (Piper, Kokoro, espeak-ng, F5-TTS).
        session_id: The conversation asking: the engine serves the clauses of many conversations
            round-robin (docs/architecture.md, "Many sessions on one box").
    """

    text: str
    mode: TTSMode = TTSMode.FAST
    voice: str | None = None
    language: str | None = None
    speed: float = 1.0
    reference: VoiceReference | None = None
    pitch: float = 1.0
    emotion: Emotion | None = None
    instructions: str | None = None
    session_id: uuid.UUID | None = None


class SynthesisStream(Protocol):
    """One utterance being synthesized.

    Attributes are known before the first chunk: the sample rate of every chunk, the engine and
    voice actually used, and a notice when the request could not be honoured as asked (e.g. a
    stock voice chosen instead of cloning, or HQ degraded to fast).
    """

    @property
    def sample_rate(self) -> int: ...

    @property
    def engine(self) -> str: ...

    @property
    def voice(self) -> str: ...

    @property
    def notice(self) -> str | None: ...

    def chunks(self) -> AsyncIterator[AudioChunk]: ...

    async def aclose(self) -> None:
        """Stop synthesis now (barge-in)."""
        ...


class SpeechSynthesizer(Protocol):
    """Text to speech for one tier.

    ``synthesize`` validates and plans the request (errors: ``InvalidInputError`` for bad text or
    language, ``NotFoundError`` for an unknown voice, ``CapacityError``/``DependencyError`` when the
    engine cannot serve) and returns once the stream's attributes are known; audio then flows from
    ``chunks()``.
    """

    async def synthesize(self, request: SynthesisRequest) -> SynthesisStream: ...

    async def voices(self) -> list[VoiceInfo]: ...

    async def health(self) -> ComponentHealth: ...
