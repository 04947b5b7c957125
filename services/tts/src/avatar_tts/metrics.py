"""Prometheus metrics of the TTS service (docs/design-notes.md §7), in a registry per service instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class TTSMetrics:
    """``tts_synthesis_latency_seconds{mode}`` (request to first audio), ``tts_model_load_seconds{mode}``,
    ``tts_rtf{mode}`` (synthesis time / audio duration, per utterance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "tts_synthesis_latency_seconds",
            "Time from request to the first audio chunk",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.load = Histogram(
            "tts_model_load_seconds",
            "Time to load a TTS model",
            ["mode"],
            buckets=LOAD_BUCKETS,
            registry=self.registry,
        )
        self.rtf = Histogram(
            "tts_rtf",
            "Real-time factor of one utterance",
            ["mode"],
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )

    def observe_load(self, mode: str, seconds: float) -> None:
        self.load.labels(mode=mode).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
