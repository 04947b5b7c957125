"""Service configuration: plain data, no I/O and no heavy imports (the backend maps its
``Settings.tts`` onto this, and takes the defaults it shares with the service from here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Tier(enum.StrEnum):
    """``fast`` streams at once; ``hq`` is the on-demand high-quality pass."""

    FAST = "fast"
    HQ = "hq"


@dataclass
class ServiceConfig:
    """What a :class:`TTSService` is built from (the backend maps its settings into this)."""

    fast_engine: str = "piper"
    hq_engine: str = "kokoro"
    fallback_engine: str = "espeak"
    hq_enabled: bool = True
    default_voice: str | None = None
    max_input_chars: int = 4000
    memory_budget_mb: float = 4096.0
    idle_unload_s: float = 300.0
    breaker_failures: int = 5
    breaker_recovery_s: float = 30.0
    max_concurrency: int = 2
    #: Longest one clause waits for a synthesis slot (sessions are served round-robin,
    #: :mod:`avatar_common.fairness`); past it the utterance fails ``BUSY``.
    queue_timeout_s: float = 20.0
    piper_model: Path | None = None
    kokoro_model: Path | None = None
    kokoro_voices: Path | None = None
    kokoro_vocab: Path | None = None
    f5_model_dir: Path | None = None
    cosyvoice_model_dir: Path | None = None
    device: str | None = None
    voice_cache: Path | None = None
    #: Which tiers this instance serves (``fast``, ``hq`` or both); the other is not loaded.
    tiers: tuple[Tier, ...] = (Tier.FAST, Tier.HQ)
