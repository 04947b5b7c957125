"""Prosody analyzer port: an utterance in, features and 0..100 scores out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from avatar.application.ports.common import ComponentHealth


@dataclass(frozen=True, slots=True)
class ProsodyResult:
    confidence: float
    stability: float
    affability: float
    features: Mapping[str, float | str | None]
    reliable: bool = True
    reason: str | None = None
    explanation: Mapping[str, str] = field(default_factory=dict)


class ProsodyAnalyzer(Protocol):
    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        """Score one utterance; ``baseline`` holds the speaker's own feature means this session."""
        ...

    async def health(self) -> ComponentHealth: ...
