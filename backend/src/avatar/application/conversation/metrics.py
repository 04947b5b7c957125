"""What the conversation pipeline reports about itself (Prometheus in production)."""

from __future__ import annotations

from typing import Protocol

#: Stages timed on every turn, in pipeline order (milliseconds in ``ConversationTurn.stage_latency_ms``):
#: ``endpoint`` end of speech -> endpoint decision (silence the VAD waited for); ``asr_final`` endpoint
#: -> final transcript; ``llm_ttft`` and ``first_clause`` final -> first token / first speakable
#: clause; ``tts_first_chunk`` synthesis request -> first audio; ``e2e`` end of speech -> first reply
#: audio handed to the connection.
STAGES = ("endpoint", "asr_final", "llm_ttft", "first_clause", "tts_first_chunk", "e2e")


class ConversationMetrics(Protocol):
    """Sink for the pipeline's measurements; implementations must never raise."""

    def observe_stage(self, stage: str, seconds: float) -> None: ...

    def observe_e2e(self, seconds: float) -> None: ...

    def set_active_sessions(self, count: int) -> None: ...

    def write_failed(self, what: str) -> None: ...

    def interrupted(self) -> None: ...

    def audio_shed(self, chunks: int) -> None:
        """Reply audio chunks dropped for a client that reads too slowly."""
        ...

    def task_skipped(self, topic: str) -> None:
        """A background task (e.g. a turn's prosody analysis) not queued because its queue is full."""
        ...


class NullMetrics:
    """Records nothing (tests and benchmarks that read turn records instead)."""

    def observe_stage(self, stage: str, seconds: float) -> None:
        pass

    def observe_e2e(self, seconds: float) -> None:
        pass

    def set_active_sessions(self, count: int) -> None:
        pass

    def write_failed(self, what: str) -> None:
        pass

    def interrupted(self) -> None:
        pass

    def audio_shed(self, chunks: int) -> None:
        pass

    def task_skipped(self, topic: str) -> None:
        pass
