"""Instant engines: a load-testing engine set that answers at once, with no models and no servers.

Every class satisfies one application port the way the real adapter does (streaming, closing,
health), but does no real work: the recognizer endpoints an utterance after a fixed length of
non-silent audio, the chat model streams a scripted reply word by word, the synthesizers stream a
tone, and storage is kept in memory. Put together by ``avatar.bootstrap.build_instant_container``
they let ``avatar bench conversation`` measure the orchestrator itself under many concurrent
sessions: whatever latency remains is the pipeline's own (queues, tasks, transport). They are also
the base of the test suite's fakes, which add recording and failure injection on top.
"""

from avatar.infrastructure.instant.engines import (
    InstantChatModel,
    InstantProsodyAnalyzer,
    InstantRecognitionStream,
    InstantRecognizer,
    InstantSpeakerEncoder,
    InstantSynthesisStream,
    InstantSynthesizer,
    InstantTextEmbedder,
)
from avatar.infrastructure.instant.storage import InMemoryDatabase, InMemoryObjectStore, InMemoryUnitOfWork

__all__ = [
    "InMemoryDatabase",
    "InMemoryObjectStore",
    "InMemoryUnitOfWork",
    "InstantChatModel",
    "InstantProsodyAnalyzer",
    "InstantRecognitionStream",
    "InstantRecognizer",
    "InstantSpeakerEncoder",
    "InstantSynthesisStream",
    "InstantSynthesizer",
    "InstantTextEmbedder",
]
