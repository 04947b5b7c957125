"""Typed errors of the TTS service, each with a stable code and the HTTP status it maps to."""

from __future__ import annotations


class TTSError(Exception):
    """Base of every error the TTS service reports.

    Attributes:
        code: Stable machine-readable code (upper snake case).
        message: What went wrong and what to do about it.
        status: HTTP status the service answers with.
    """

    code = "TTS_ERROR"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidTextError(TTSError):
    """The text cannot be spoken as sent (empty, too long, control characters, markup)."""

    code = "INVALID_INPUT"
    status = 422


class UnknownVoiceError(TTSError):
    code = "UNKNOWN_VOICE"
    status = 404


class UnknownModelError(TTSError):
    code = "UNKNOWN_MODEL"
    status = 404


class UnsupportedLanguageError(TTSError):
    code = "UNSUPPORTED_LANGUAGE"
    status = 422


class MemoryShortError(TTSError):
    """Loading a model would exceed the memory budget even after evicting idle models."""

    code = "VRAM_EXHAUSTED"
    status = 503


class EngineUnavailableError(TTSError):
    """An engine's library or model files are missing, or it failed to load or run."""

    code = "ENGINE_UNAVAILABLE"
    status = 503


class BusyError(TTSError):
    """No synthesis slot freed up in time: other conversations held them (docs/architecture.md)."""

    code = "BUSY"
    status = 503
