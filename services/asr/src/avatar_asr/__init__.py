"""AVATAR streaming speech recognition: Silero VAD endpointing + faster-whisper (CTranslate2)."""

from avatar_asr.config import ASRConfig
from avatar_asr.errors import ASRError

__all__ = ["ASRConfig", "ASRError"]
