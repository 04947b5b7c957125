"""Prosody analyzer port: an utterance in, features and 0..100 scores out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from avatar.application.ports.common import ComponentHealth


@dataclass(frozen=True, slots=True)
class ProsodyResult:
    """How one utterance was spoken (docs/prosody.md has the formula).

    Attributes:
        confidence: 0..100 (loudness, pitch range, rate, few pauses).
        stability: 0..100 (low jitter and shimmer, harmonic voice).
        affability: 0..100 (lively melody, clear voice, pitch above own usual).
        features: Raw features (Praat names and ``egemaps.*``) and quality metrics.
        reliable: False for audio too short, silent, clipped or not speech (scores are then 50).
        reason: Why the result is unreliable (``too_short``, ``silent``, ``clipped``, ``non_speech``).
        explanation: Per score, each term's z-score and weight.
    """

    confidence: float
    stability: float
    affability: float
    features: Mapping[str, float | str | None]
    reliable: bool = True
    reason: str | None = None
    explanation: Mapping[str, str] = field(default_factory=dict)


class ProsodyAnalyzer(Protocol):
    """Scores utterances off the response path (worker processes or the prosody service)."""

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        """Score one utterance.

        Args:
            pcm: PCM16 mono little-endian samples.
            sample_rate: Rate of ``pcm`` (at least 8 kHz).
            baseline: The speaker's own feature means this session; scores are relative to it.

        Raises:
            InvalidInputError: for malformed PCM or an unusable sample rate.
            CapacityError: when too many analyses are waiting.
            DependencyError: when a remote analyzer is unreachable.
        """
        ...

    async def health(self) -> ComponentHealth: ...
