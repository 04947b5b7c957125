"""Prometheus metrics of the TTS service (docs/design-notes.md §7), in a registry per service instance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class ModelAccounting(Protocol):
    """What the model manager reports about its models (``ModelManager``)."""

    @property
    def budget_mb(self) -> float: ...

    def status(self) -> Mapping[str, Mapping[str, object]]: ...


class _ModelMemoryCollector(Collector):
    """Reads the model manager at scrape time: its own accounting of each loaded model's memory
    (growth of CUDA memory across the load on a GPU, of the process RSS otherwise) and the budget."""

    def __init__(self, manager: ModelAccounting) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "tts_model_memory_bytes",
            "Memory of each TTS model as the model manager accounts it (0 when not loaded)",
            labels=["model", "mode"],
        )
        loaded = GaugeMetricFamily(
            "tts_model_loaded", "1 while the model is loaded", labels=["model", "mode"]
        )
        for name, info in self._manager.status().items():
            mode = str(info["mode"])
            is_loaded = bool(info["loaded"])
            size_mb = info["size_mb"]
            size = float(size_mb) * 1e6 if is_loaded and isinstance(size_mb, int | float) else 0.0
            memory.add_metric([name, mode], size)
            loaded.add_metric([name, mode], 1.0 if is_loaded else 0.0)
        yield memory
        yield loaded
        yield GaugeMetricFamily(
            "tts_memory_budget_bytes",
            "Memory all loaded TTS models together may use (the manager's budget)",
            value=self._manager.budget_mb * 1e6,
        )


class TTSMetrics:
    """``tts_synthesis_latency_seconds{mode}`` (request to first audio), ``tts_model_load_seconds{mode}``,
    ``tts_rtf{mode}`` (synthesis time / audio duration, per utterance), and once a model manager is
    watched ``tts_model_memory_bytes{model,mode}``, ``tts_model_loaded{model,mode}`` and
    ``tts_memory_budget_bytes``."""

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

    def watch_models(self, manager: ModelAccounting) -> None:
        """Export the manager's memory accounting (read at each scrape)."""
        self.registry.register(_ModelMemoryCollector(manager))

    def observe_load(self, mode: str, seconds: float) -> None:
        self.load.labels(mode=mode).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
