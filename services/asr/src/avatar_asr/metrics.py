"""Prometheus metrics of one service instance (own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from avatar_asr.engine import Recognition
from avatar_asr.stream import StreamObserver

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ASRMetrics(StreamObserver):
    """``asr_rtf``, partial/final latency, confidence, VAD speech ratio, active streams, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rtf = Histogram(
            "asr_rtf",
            "Whisper decode time / audio duration",
            ["kind"],
            buckets=_RTF_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "asr_result_latency_seconds",
            "Delay from the audio being available to the result",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.confidence = Histogram(
            "asr_confidence",
            "Confidence (geometric mean token probability) of each decoded result",
            ["kind"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.vad_frame_count = Counter(
            "asr_vad_frames", "VAD frames classified", ["speech"], registry=self.registry
        )
        self.vad_speech_ratio = Gauge(
            "asr_vad_speech_ratio", "Share of audio the VAD judged to be speech", registry=self.registry
        )
        self.active_streams = Gauge("asr_active_streams", "Open recognition streams", registry=self.registry)
        self.queue_pending = Gauge(
            "asr_queue_pending", "Whisper jobs waiting or running", registry=self.registry
        )
        self.filtered = Counter(
            "asr_hallucinations_filtered", "Segments dropped as hallucinations", registry=self.registry
        )
        self.low_confidence = Counter(
            "asr_low_confidence_results", "Results flagged low confidence", registry=self.registry
        )
        self.requests = Counter(
            "asr_requests", "Requests by endpoint and outcome", ["endpoint", "code"], registry=self.registry
        )
        self._speech = 0
        self._total = 0

    def decoded(self, kind: str, recognition: Recognition) -> None:
        if recognition.duration > 0:
            self.rtf.labels(kind).observe(recognition.decode_s / recognition.duration)
        if recognition.text:
            self.confidence.labels(kind).observe(recognition.confidence)
        if recognition.filtered:
            self.filtered.inc(len(recognition.filtered))
        if kind == "final" and recognition.low_confidence:
            self.low_confidence.inc()

    def result_latency(self, kind: str, seconds: float) -> None:
        self.latency.labels(kind).observe(seconds)

    def vad_frames(self, speech: int, total: int) -> None:
        self._speech += speech
        self._total += total
        self.vad_frame_count.labels("yes").inc(speech)
        self.vad_frame_count.labels("no").inc(total - speech)
        if self._total:
            self.vad_speech_ratio.set(self._speech / self._total)
