"""The conversation pipeline's measurements as Prometheus metrics (served on ``/api/v1/metrics``).

The metric objects are module-level because ``prometheus_client`` registers each name once per
process; every :class:`PrometheusConversationMetrics` writes to the same series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 3.5, 5.0, 7.5, 10.0, 20.0)
E2E_LATENCY = Histogram(
    "conversation_e2e_latency_seconds", "End of user speech to the first reply audio sent", buckets=_BUCKETS
)
STAGE_LATENCY = Histogram(
    "conversation_stage_latency_seconds", "Latency of each pipeline stage", ["stage"], buckets=_BUCKETS
)
ACTIVE_SESSIONS = Gauge("active_sessions_count", "Live conversation sessions (connected or in grace)")
WRITE_FAILURES = Counter("conversation_write_failures_total", "Background writes that failed", ["what"])
INTERRUPTIONS = Counter("conversation_interruptions_total", "Replies interrupted by barge-in")
AUDIO_SHED = Counter(
    "conversation_audio_shed_chunks_total", "Reply audio chunks dropped for a client that reads too slowly"
)
TASKS_SKIPPED = Counter(
    "conversation_tasks_skipped_total", "Background tasks not queued because their queue was full", ["topic"]
)


class PrometheusConversationMetrics:
    """Satisfies ``avatar.application.conversation.ConversationMetrics``."""

    def observe_stage(self, stage: str, seconds: float) -> None:
        STAGE_LATENCY.labels(stage=stage).observe(seconds)

    def observe_e2e(self, seconds: float) -> None:
        E2E_LATENCY.observe(seconds)

    def set_active_sessions(self, count: int) -> None:
        ACTIVE_SESSIONS.set(count)

    def write_failed(self, what: str) -> None:
        WRITE_FAILURES.labels(what=what).inc()

    def interrupted(self) -> None:
        INTERRUPTIONS.inc()

    def audio_shed(self, chunks: int) -> None:
        AUDIO_SHED.inc(chunks)

    def task_skipped(self, topic: str) -> None:
        TASKS_SKIPPED.labels(topic=topic).inc()


LIVE_RECEIVED = Counter("live_chat_received_total", "Live chat messages received", ["platform"])
LIVE_DROPPED = Counter(
    "live_chat_dropped_total", "Live chat messages not answered, by reason (docs/live.md)", ["reason"]
)
LIVE_REPLY = Histogram(
    "live_reply_seconds", "Chosen chat message to its spoken reply ready", buckets=_BUCKETS
)


class PrometheusLiveMetrics:
    """Satisfies ``avatar.application.live.service.LiveMetrics``."""

    def received(self, platform: str) -> None:
        LIVE_RECEIVED.labels(platform=platform).inc()

    def dropped(self, reason: str) -> None:
        LIVE_DROPPED.labels(reason=reason).inc()

    def replied(self, seconds: float) -> None:
        LIVE_REPLY.observe(seconds)


RETENTION_SWEPT = Counter(
    "retention_swept_objects_total", "Stored audio objects deleted past their retention", ["kind"]
)
RETENTION_SWEPT_BYTES = Counter(
    "retention_swept_bytes_total", "Bytes of stored audio deleted past their retention", ["kind"]
)
RETENTION_ARCHIVED = Counter(
    "retention_archived_objects_total", "Raw input recordings re-encoded as Ogg/Opus"
)
RETENTION_ARCHIVED_BYTES = Counter(
    "retention_archived_bytes_total", "Bytes of raw input audio before and after the Opus archive", ["stage"]
)
RETENTION_FAILURES = Counter(
    "retention_failures_total", "Retention steps that failed (retried by the next sweep)", ["kind"]
)
RETENTION_LAST_RUN = Gauge("retention_last_run_timestamp_seconds", "When the last retention sweep ended")
RETENTION_LAST_SUCCESS = Gauge(
    "retention_last_success_timestamp_seconds", "When the last retention sweep without failures ended"
)


class PrometheusRetentionMetrics:
    """Satisfies ``avatar.application.ports.retention.RetentionMetrics``."""

    def swept(self, kind: str, objects: int, size: int) -> None:
        RETENTION_SWEPT.labels(kind=kind).inc(objects)
        RETENTION_SWEPT_BYTES.labels(kind=kind).inc(size)

    def archived(self, objects: int, size_before: int, size_after: int) -> None:
        RETENTION_ARCHIVED.inc(objects)
        RETENTION_ARCHIVED_BYTES.labels(stage="before").inc(size_before)
        RETENTION_ARCHIVED_BYTES.labels(stage="after").inc(size_after)

    def failed(self, kind: str, count: int = 1) -> None:
        RETENTION_FAILURES.labels(kind=kind).inc(count)

    def finished(self, timestamp: float, ok: bool) -> None:
        RETENTION_LAST_RUN.set(timestamp)
        if ok:
            RETENTION_LAST_SUCCESS.set(timestamp)


SPOOL_RECORDS = Gauge("storage_spool_records", "Writes waiting in the storage spool (docs/resilience.md)")
SPOOL_BYTES = Gauge("storage_spool_bytes", "Bytes of the writes waiting in the storage spool")
SPOOL_SPOOLED = Counter("storage_spool_spooled_total", "Writes put into the storage spool")
SPOOL_REPLAYED = Counter("storage_spool_replayed_total", "Spooled writes applied to storage")
SPOOL_FAILED = Counter(
    "storage_spool_failed_total", "Spooled writes set aside, by reason (corrupt, rejected)", ["reason"]
)
SPOOL_FULL = Counter("storage_spool_full_total", "Writes lost because the storage spool was full")


class PrometheusSpoolMetrics:
    """Satisfies ``avatar.application.ports.spool.SpoolMetrics``."""

    def depth(self, records: int, nbytes: int) -> None:
        SPOOL_RECORDS.set(records)
        SPOOL_BYTES.set(nbytes)

    def spooled(self) -> None:
        SPOOL_SPOOLED.inc()

    def replayed(self) -> None:
        SPOOL_REPLAYED.inc()

    def failed(self, reason: str) -> None:
        SPOOL_FAILED.labels(reason=reason).inc()

    def full(self) -> None:
        SPOOL_FULL.inc()
