"""Analyze one utterance: reliability checks, features, scores; and a bounded worker pool for it.

Reliability (``reliable=False`` with ``reason``; scores are then 50 and say so):

* ``too_short``: under :data:`MIN_DURATION_S` of audio, or under :data:`MIN_VOICED_S` voiced.
* ``silent``: RMS below :data:`SILENCE_DBFS`.
* ``clipped``: more than :data:`MAX_CLIPPED_RATIO` of the samples at full scale (features are still
  computed and kept, but loudness and voice quality are distorted, so the scores are not used).
* ``non_speech``: less than :data:`MIN_VOICED_FRACTION` of the sounding frames voiced (noise,
  clicks), or fewer syllable nuclei than one per :data:`MAX_SECONDS_PER_SYLLABLE` of sounding audio
  (a steady hum or tone: voiced, but without the loudness rhythm of syllables).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from avatar_common.audio import clipping_ratio, resample, rms_dbfs
from avatar_prosody.config import ExecutorKind as ExecutorKind  # callers import it from here
from avatar_prosody.config import ServiceConfig
from avatar_prosody.features import Features, egemaps_functionals, praat_features
from avatar_prosody.scoring import compute_scores, neutral_scores

MIN_DURATION_S = 0.5
MIN_VOICED_S = 0.2
SILENCE_DBFS = -55.0
MAX_CLIPPED_RATIO = 0.005
MIN_VOICED_FRACTION = 0.25
MAX_SECONDS_PER_SYLLABLE = 1.0
#: Analysis rate: higher input rates are resampled down (speech prosody lives below 8 kHz).
ANALYSIS_RATE = 16000
MIN_SAMPLE_RATE = 8000


@dataclass(frozen=True, slots=True)
class Analysis:
    """The result for one utterance.

    Attributes:
        confidence: 0..100.
        stability: 0..100.
        affability: 0..100.
        features: Raw features (Praat names plus ``egemaps.*``) and quality metrics.
        reliable: False when the audio cannot be scored meaningfully.
        reason: ``too_short`` | ``silent`` | ``clipped`` | ``non_speech`` when unreliable.
        explanation: One line per score: each term's z-score and weight.
        baseline_used: Whether the scores are relative to the speaker's own baseline.
        duration_s: Length of the analyzed audio.
        elapsed_ms: CPU wall time of the analysis.
    """

    confidence: float
    stability: float
    affability: float
    features: Features
    reliable: bool
    reason: str | None
    explanation: dict[str, str] = field(default_factory=dict)
    baseline_used: bool = False
    duration_s: float = 0.0
    elapsed_ms: float = 0.0

    def scores(self) -> dict[str, float]:
        return {"confidence": self.confidence, "stability": self.stability, "affability": self.affability}


def _unreliable(reason: str, features: Features, duration_s: float, started: float) -> Analysis:
    neutral = neutral_scores(reason)
    return Analysis(
        neutral.confidence,
        neutral.stability,
        neutral.affability,
        features,
        False,
        reason,
        neutral.explanation,
        False,
        duration_s,
        (time.perf_counter() - started) * 1000.0,
    )


def analyze(
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    baseline: Mapping[str, float] | None = None,
    *,
    egemaps: bool = True,
) -> Analysis:
    """Check, measure and score one mono utterance (float samples in [-1, 1]). CPU bound.

    Raises:
        ValueError: for a sample rate below 8 kHz or samples that are not finite.
    """
    started = time.perf_counter()
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample rate {sample_rate} Hz is too low (at least {MIN_SAMPLE_RATE} Hz)")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("the audio contains invalid samples")
    duration_s = x.size / float(sample_rate)
    quality: Features = {
        "duration_s": duration_s,
        "rms_dbfs": float(max(rms_dbfs(x), -120.0)),
        "clipping_ratio": clipping_ratio(x, 0.99),
    }
    if duration_s < MIN_DURATION_S:
        return _unreliable("too_short", quality, duration_s, started)
    if float(quality["rms_dbfs"] or -120.0) < SILENCE_DBFS:
        return _unreliable("silent", quality, duration_s, started)
    clipped = float(quality["clipping_ratio"] or 0.0) > MAX_CLIPPED_RATIO

    if sample_rate > ANALYSIS_RATE:
        x = resample(x, sample_rate, ANALYSIS_RATE)
        sample_rate = ANALYSIS_RATE
    features: Features = {**quality, **praat_features(x, sample_rate)}
    voiced_s = float(features.get("voiced_duration_s") or 0.0)
    voiced_fraction = float(features.get("voiced_fraction") or 0.0)
    syllables = float(features.get("syllable_count") or 0.0)
    span_s = float(features.get("speech_span_s") or 0.0)
    if voiced_fraction < MIN_VOICED_FRACTION or syllables < max(1.0, span_s / MAX_SECONDS_PER_SYLLABLE):
        return _unreliable("non_speech", features, duration_s, started)
    if voiced_s < MIN_VOICED_S:
        return _unreliable("too_short", features, duration_s, started)
    if egemaps:
        features.update(egemaps_functionals(x, sample_rate))
    if clipped:
        return _unreliable("clipped", features, duration_s, started)
    scores = compute_scores(features, baseline)
    return Analysis(
        scores.confidence,
        scores.stability,
        scores.affability,
        features,
        True,
        None,
        scores.explanation,
        bool(baseline),
        duration_s,
        (time.perf_counter() - started) * 1000.0,
    )


def _warm_up() -> None:
    """Load the native libraries in a worker before the first real utterance arrives."""
    from avatar_prosody.synth import synthetic_voice

    analyze(synthetic_voice(1.0), ANALYSIS_RATE)


class BusyError(RuntimeError):
    """More analyses are waiting than the pool accepts."""


class WorkerLostError(RuntimeError):
    """A worker process died during the analysis (the pool is replaced; retrying can succeed)."""


#: The service's defaults (pool size, executor, admission) are declared once, in its config.
_DEFAULTS = ServiceConfig()


class ProsodyEngine:
    """Runs :func:`analyze` in a bounded pool, off the caller's event loop.

    Praat holds the GIL while it computes, so in a thread it would slow every coroutine of the
    process (the reply path included); the default ``process`` pool keeps it on other cores and
    off the interpreter that streams replies. ``thread`` is for tests and the benchmark's
    comparison.
    """

    def __init__(
        self,
        workers: int = _DEFAULTS.workers,
        *,
        executor: ExecutorKind = _DEFAULTS.executor,
        max_pending: int = _DEFAULTS.max_pending,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.executor_kind: ExecutorKind = executor
        self.max_pending = max_pending
        self._pool: concurrent.futures.Executor | None = None
        self._admitted = 0
        self.ready = False
        #: Why the current pool cannot serve any more (a worker died), until it is replaced.
        self.broken: str | None = None
        #: Pools replaced after a worker died.
        self.restarts = 0

    @property
    def pending(self) -> int:
        """Analyses admitted and not finished (running or waiting for a worker)."""
        return self._admitted

    def dead_worker(self) -> str | None:
        """Why the worker pool can no longer serve (a worker process died), or None."""
        if self.broken is not None:
            return self.broken
        pool = self._pool
        if isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            # The executor's own bookkeeping: a dead worker breaks the whole pool.
            if getattr(pool, "_broken", False):
                return f"the prosody worker pool broke: {pool._broken}"
            processes = getattr(pool, "_processes", None) or {}
            for process in list(processes.values()):
                if process.exitcode is not None:
                    return f"prosody worker pid {process.pid} exited with code {process.exitcode}"
        return None

    def worker_pids(self) -> list[int]:
        """PIDs of the running worker processes (none for threads or before the first analysis)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(p.pid for p in list(processes.values()) if p.pid is not None)

    def discard_pool(self) -> None:
        """Drop the current pool without waiting for it (its workers are dead or going); the next
        analysis, or :meth:`replace_pool`, starts a fresh one."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def replace_pool(self) -> None:
        """Replace a pool whose worker died with a fresh one, warmed up if the old one was."""
        if self.dead_worker() is None:
            return  # not started yet (workers start with the first analysis), or already replaced
        was_ready = self.ready
        self.discard_pool()
        self.broken = None
        self.restarts += 1
        if was_ready:
            await self.warm_up()

    def _get_pool(self) -> concurrent.futures.Executor:
        if self._pool is not None and self.dead_worker() is not None:
            # A worker died and nobody replaced the pool yet (e.g. the stand-alone service, which
            # runs without a supervisor): replace it now rather than fail every later analysis.
            self.discard_pool()
            self.broken = None
            self.restarts += 1
        if self._pool is None:
            if self.executor_kind == "process":
                # spawn: forking a process that runs an event loop and threads is unsafe.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            else:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="prosody"
                )
        return self._pool

    async def warm_up(self) -> None:
        """Start every worker and load openSMILE and Praat in it."""
        loop = asyncio.get_running_loop()
        pool = self._get_pool()
        await asyncio.gather(*(loop.run_in_executor(pool, _warm_up) for _ in range(self.workers)))
        self.ready = True

    async def analyze(
        self, samples: npt.NDArray[np.float32], sample_rate: int, baseline: Mapping[str, float] | None = None
    ) -> Analysis:
        """Analyze in the pool.

        Raises:
            BusyError: when ``max_pending`` analyses are already admitted.
            WorkerLostError: a worker process died during this analysis.
            ValueError: for unusable audio (see :func:`analyze`).
        """
        if self._admitted >= self.max_pending:
            raise BusyError(f"{self._admitted} analyses are already waiting; retry later")
        self._admitted += 1
        try:
            loop = asyncio.get_running_loop()
            pool = self._get_pool()
            try:
                result = await loop.run_in_executor(
                    pool, analyze, samples, sample_rate, dict(baseline) if baseline else None
                )
            except concurrent.futures.BrokenExecutor as exc:
                if pool is self._pool:
                    self.broken = f"a prosody worker process died: {exc}"
                raise WorkerLostError("a prosody worker process died during the analysis; retry") from exc
            self.ready = True
            return result
        finally:
            self._admitted -= 1

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
