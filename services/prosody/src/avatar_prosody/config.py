"""Service configuration: plain data, no I/O and no heavy imports (the backend maps its
``Settings.prosody`` onto this, and takes the defaults it shares with the service from here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Where analyses run: worker processes (keeps Praat's GIL off the server) or threads.
ExecutorKind = Literal["process", "thread"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Settings of the prosody service.

    Attributes:
        workers: Analyses run at once (worker processes or threads).
        executor: ``process`` (default; keeps Praat's GIL off the server) or ``thread``.
        max_pending: Analyses admitted at once (running + waiting) before answering 503.
        max_seconds: Longest audio accepted.
        max_bytes: Largest request body accepted.
        warm_up: Load the libraries in every worker at start-up.
    """

    workers: int = 1
    executor: ExecutorKind = "process"
    max_pending: int = 16
    max_seconds: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    warm_up: bool = True
