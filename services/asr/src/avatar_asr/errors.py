"""Errors the service reports, each with a stable code and an HTTP status."""

from __future__ import annotations


class ASRError(Exception):
    """A request the service refuses or could not serve.

    Attributes:
        code: Stable machine-readable code (``INVALID_AUDIO``, ``BUSY``, ...).
        message: What went wrong and what to do.
        status: HTTP status for the REST endpoints.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class BusyError(ASRError):
    """The inference queue is full; retry later."""

    def __init__(self, message: str = "the speech recognizer is busy; retry shortly") -> None:
        super().__init__("BUSY", message, 503)
