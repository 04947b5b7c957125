"""The engine protocol every TTS engine satisfies, and the value types it speaks in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from avatar_tts.config import Tier as Tier  # the engines import it from here

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice an engine can speak with.

    Attributes:
        voice_id: ``engine:name``, unique in the service.
        name: The engine's own name for it.
        engine: Engine name.
        languages: ISO 639-1 codes it speaks.
        tier: Tier of its engine.
        can_clone: Whether the engine clones a reference clip instead of using a stock timbre.
    """

    voice_id: str
    name: str
    engine: str
    languages: tuple[str, ...]
    tier: Tier
    can_clone: bool = False


@dataclass(frozen=True, slots=True)
class PhonemeSpan:
    """One phoneme (IPA for the espeak-based voices) and where it sounds in its audio, in seconds."""

    phoneme: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class AlignedAudio:
    """Audio with the engine's phoneme timing (Piper gives it; it drives the avatar's vowels)."""

    audio: FloatAudio
    phonemes: tuple[PhonemeSpan, ...] = ()


def audio_of(item: FloatAudio | AlignedAudio) -> FloatAudio:
    """The samples of what an engine yielded, with or without phoneme timing."""
    return item.audio if isinstance(item, AlignedAudio) else item


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference clip for zero-shot cloning: mono float32 samples, their transcript, embedding."""

    samples: FloatAudio
    sample_rate: int
    transcript: str
    embedding: tuple[float, ...] | None = None


class Engine(Protocol):
    """A speech engine: blocking, called from a worker thread, one clause at a time.

    ``load`` and ``unload`` are driven by the model lifecycle manager; ``voices`` must work
    without the model loaded. ``synthesize`` yields one or more float32 arrays at
    ``sample_rate`` for one chunk of text, so a caller can stop between them.
    """

    @property
    def name(self) -> str: ...

    @property
    def tier(self) -> Tier: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def can_clone(self) -> bool: ...

    #: Rough resident size of the loaded model in MB, used before the first real measurement.
    @property
    def estimate_mb(self) -> float: ...

    def voices(self) -> list[Voice]: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio | AlignedAudio]: ...


_LANGUAGE_ALIASES = {
    "cmn": "zh",
    "zh-cn": "zh",
    "zh-tw": "zh",
    "zh-hans": "zh",
    "zh-hant": "zh",
    "jp": "ja",
    "kr": "ko",
    "kor": "ko",
    "en-us": "en",
    "en-gb": "en",
    "eng": "en",
    "jpn": "ja",
    "zho": "zh",
}


def normalize_language(code: str) -> str:
    """Lower-case ISO 639-1 code for a language tag (``en-US`` -> ``en``, ``cmn`` -> ``zh``)."""
    key = code.strip().lower().replace("_", "-")
    if key in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[key]
    return key.split("-", 1)[0]


#: Longest style instruction passed to an engine (OpenAI's ``instructions``, the emotion's style).
MAX_INSTRUCTION_CHARS = 500


@runtime_checkable
class InstructableEngine(Protocol):
    """An engine that can follow a style instruction ("speak cheerfully"), e.g. CosyVoice's
    instruct mode. Engines without it (Piper, Kokoro, espeak-ng, F5-TTS) never see the text."""

    follows_instructions: bool

    def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        language: str,
        speed: float,
        reference: Reference | None = None,
        instructions: str | None = None,
    ) -> Iterator[FloatAudio | AlignedAudio]: ...
