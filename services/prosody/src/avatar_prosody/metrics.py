"""Prometheus metrics of prosody analysis, in a registry per engine instance (the service app's
``/metrics``, or the orchestrator's ``/api/v1/metrics`` when the engine runs in-process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from avatar_prosody.analyzer import Analysis


class ProsodyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "prosody_analysis_seconds",
            "Wall time of one analysis (queueing for a worker included)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
            registry=self.registry,
        )
        self.audio = Histogram(
            "prosody_audio_seconds",
            "Length of the analyzed audio",
            buckets=(0.5, 1, 2, 5, 10, 20, 40, 60),
            registry=self.registry,
        )
        self.results = Counter(
            "prosody_analyses",
            "Analyses by outcome (reliable, an unreliable reason, or rejected)",
            ["outcome"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "prosody_pending", "Analyses running or waiting for a worker", registry=self.registry
        )

    def observe(self, result: Analysis, seconds: float) -> None:
        """One finished analysis: its wall time, audio length and outcome."""
        self.latency.observe(seconds)
        self.audio.observe(result.duration_s)
        self.results.labels(outcome="reliable" if result.reliable else (result.reason or "unreliable")).inc()
