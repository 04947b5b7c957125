"""faster-whisper behind a bounded work queue shared by every stream and upload.

One ``WhisperModel`` is loaded once. Whisper calls run on dedicated worker threads (never on the
event loop), finals and partials in separate lanes so a final never queues behind a partial; a job
cancelled before it started is skipped, and when ``max_queue`` jobs are already waiting or running a
new one is refused with ``BUSY`` at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.errors import ASRError, BusyError
from avatar_asr.hallucination import SegmentEvidence, is_hallucination
from avatar_asr.vad import FloatAudio

log = logging.getLogger(__name__)
T = TypeVar("T")

PRIORITY_FINAL = 0
PRIORITY_PARTIAL = 1
#: Whisper's temperature fallback (what OpenAI's ``temperature=0`` means): a decode that loops or is
#: unsure is retried at the next temperature.
TEMPERATURE_FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    probability: float
    spaced: bool = True  # Whisper's text has a space before it ("ill" "-disposed": False)


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()  # when word timings were asked for


@dataclass(frozen=True, slots=True)
class Recognition:
    """One decode of one piece of audio (times in seconds from its start).

    Attributes:
        text: Hallucination-filtered text.
        confidence: 0..1, the geometric mean token probability of the kept segments.
        language: Detected (or fixed) language code.
        language_probability: How sure the language detection was (1.0 when fixed).
        segments: Kept segments.
        words: Word timings of kept segments (empty when not requested).
        duration: Seconds of audio decoded.
        low_confidence: ``confidence`` is below the configured threshold.
        filtered: Segments dropped as hallucinations.
        decode_s: Wall time of the Whisper call.
    """

    text: str
    confidence: float
    language: str | None
    language_probability: float
    segments: tuple[Segment, ...]
    words: tuple[Word, ...]
    duration: float
    low_confidence: bool
    filtered: tuple[str, ...] = ()
    decode_s: float = 0.0


def since(rec: Recognition, boundary: float, origin: float, duration: float, threshold: float) -> Recognition:
    """The words of ``rec`` (decoded with word timings) centred after ``boundary``, with times from
    ``origin`` on and ``duration`` seconds long: the new part of audio decoded behind its context."""

    def shift(w: Word) -> Word:
        return Word(w.word, max(0.0, w.start - origin), max(0.0, w.end - origin), w.probability, w.spaced)

    segments: list[Segment] = []
    for seg in rec.segments:
        kept = tuple(shift(w) for w in seg.words if (w.start + w.end) / 2 >= boundary)
        if kept:
            text = "".join((" " if w.spaced else "") + w.word for w in kept).strip()
            segments.append(
                Segment(text, kept[0].start, kept[-1].end, seg.avg_logprob, seg.no_speech_prob, kept)
            )
    weight = sum(len(s.words) for s in segments)
    confidence = math.exp(sum(s.avg_logprob * len(s.words) for s in segments) / weight) if weight else 0.0
    confidence = min(1.0, max(0.0, confidence))
    text = "".join((" " if s.words[0].spaced else "") + s.text for s in segments).strip()
    return Recognition(
        text=text,
        confidence=confidence,
        language=rec.language,
        language_probability=rec.language_probability,
        segments=tuple(segments),
        words=tuple(w for s in segments for w in s.words),
        duration=duration,
        low_confidence=is_low_confidence(text, confidence, threshold),
        filtered=rec.filtered,
        decode_s=rec.decode_s,
    )


def is_low_confidence(text: str, confidence: float, threshold: float) -> bool:
    """A result with text whose confidence is under the threshold is kept but flagged.

    See docs/design-notes.md §9 (noisy audio).
    """
    return bool(text.strip()) and confidence < threshold


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable[[], Any] | None = None
    future: concurrent.futures.Future[Any] | None = None


class InferenceQueue:
    """Worker threads in two lanes with a hard bound on outstanding jobs.

    Finals (and uploads) have their own ``workers`` threads; partials have one thread of their own.
    A final therefore never waits behind a partial decode that is already running (a CTranslate2 call
    cannot be interrupted): it runs beside it, sharing the CPU, which on a small machine still beats
    queueing behind a whole second Whisper call. The bound counts both lanes.
    """

    def __init__(self, workers: int, max_pending: int) -> None:
        self._lanes: dict[int, tuple[queue.PriorityQueue[_Job], int]] = {
            PRIORITY_FINAL: (queue.PriorityQueue(), max(1, workers)),
            PRIORITY_PARTIAL: (queue.PriorityQueue(), 1),
        }
        self._max_pending = max(1, max_pending)
        self._seq = itertools.count()
        self._pending = 0
        self._partials = 0
        # Partials are best effort: they may hold at most half the queue, so finals always find room.
        self._max_partials = max(1, self._max_pending // 2)
        self._lock = threading.Lock()
        self._threads: list[tuple[threading.Thread, queue.PriorityQueue[_Job]]] = []
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def concurrency(self) -> int:
        """Jobs that may run at once (all lanes)."""
        return sum(n for _q, n in self._lanes.values())

    def _start(self) -> None:
        if self._threads:
            return
        for priority, (lane, count) in self._lanes.items():
            for i in range(count):
                t = threading.Thread(
                    target=self._run, args=(lane,), name=f"asr-whisper-{priority}-{i}", daemon=True
                )
                t.start()
                self._threads.append((t, lane))

    def _run(self, lane: queue.PriorityQueue[_Job]) -> None:
        while True:
            job = lane.get()
            if job.fn is None or job.future is None:
                return
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.fn())
                    except BaseException as exc:  # handed to the awaiting coroutine
                        job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1
                    if job.priority == PRIORITY_PARTIAL:
                        self._partials -= 1

    def submit(self, fn: Callable[[], T], priority: int) -> concurrent.futures.Future[T]:
        """Queue ``fn`` in its lane; raises :class:`BusyError` at once when the queue is full."""
        priority = PRIORITY_PARTIAL if priority == PRIORITY_PARTIAL else PRIORITY_FINAL
        lane, _count = self._lanes[priority]
        with self._lock:
            if self._closed:
                raise ASRError("SHUTTING_DOWN", "the speech recognizer is shutting down", 503)
            if self._pending >= self._max_pending or (
                priority == PRIORITY_PARTIAL and self._partials >= self._max_partials
            ):
                raise BusyError()
            self._pending += 1
            self._partials += priority == PRIORITY_PARTIAL
            self._start()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        lane.put(_Job(priority, next(self._seq), fn, future))
        return future

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for _t, lane in self._threads:
            lane.put(_Job(10**9, next(self._seq)))
        for t, _lane in self._threads:
            t.join(timeout=30)
        self._threads.clear()


class WhisperEngine:
    """The one loaded Whisper model and the queue in front of it."""

    def __init__(self, config: ASRConfig) -> None:
        self.config = config
        self._model: Any = None
        self._load_lock = threading.Lock()
        self.queue = InferenceQueue(config.workers, config.max_queue)
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model (idempotent, thread-safe); a missing model raises ``MODEL_UNAVAILABLE``."""
        with self._load_lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel

            started = time.perf_counter()
            try:
                self._model = WhisperModel(
                    self.config.model,
                    device=self.config.device,
                    compute_type=self.config.compute_type,
                    cpu_threads=self.config.cpu_threads,
                    num_workers=self.queue.concurrency,
                )
            except Exception as exc:
                raise ASRError(
                    "MODEL_UNAVAILABLE",
                    f"cannot load Whisper model {self.config.model!r}: {exc}; run `avatar models prepare`",
                    503,
                ) from exc
            self.load_seconds = time.perf_counter() - started
            log.info("loaded Whisper %s in %.1f s", self.config.model, self.load_seconds)

    def recognize(
        self,
        samples: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float | tuple[float, ...] = 0.0,
        word_timestamps: bool = True,
        condition_on_previous_text: bool = False,
        task: str = "transcribe",
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Recognition:
        """Decode 16 kHz mono audio synchronously (call through :meth:`run`).

        Args:
            prompt: Text that came before this audio (context; Whisper's ``initial_prompt``).
            temperature: One temperature, or a fallback sequence (:data:`TEMPERATURE_FALLBACK`).
            condition_on_previous_text: Within this audio, each 30 s window sees the text of the
                windows before it (for long audio).
            task: ``transcribe``, or ``translate`` (Whisper's translation into English).
            on_segment: Called (on this worker thread) with each kept segment as soon as Whisper
                has decoded it, for callers that stream the transcript; the result is the same.
        """
        self.load()
        started = time.perf_counter()
        segments_iter, info = self._model.transcribe(
            samples,
            language=language,
            initial_prompt=prompt or None,
            temperature=temperature,
            beam_size=self.config.beam_size,
            word_timestamps=word_timestamps,
            condition_on_previous_text=condition_on_previous_text,
            vad_filter=False,
            task=task,
        )
        kept: list[Segment] = []
        words: list[Word] = []
        dropped: list[str] = []
        logprob_sum = 0.0
        weight = 0
        for s in segments_iter:  # lazy: each 30 s window is decoded when it is asked for
            evidence = SegmentEvidence(s.text, float(s.no_speech_prob), float(s.avg_logprob))
            if is_hallucination(evidence):
                if s.text.strip():
                    dropped.append(s.text.strip())
                continue
            seg_words = tuple(
                Word(w.word.strip(), float(w.start), float(w.end), float(w.probability), w.word[:1].isspace())
                for w in s.words or ()
            )
            kept.append(
                Segment(
                    s.text.strip(),
                    float(s.start),
                    float(s.end),
                    evidence.avg_logprob,
                    evidence.no_speech_prob,
                    seg_words,
                )
            )
            n_tokens = max(1, len(s.tokens))
            logprob_sum += evidence.avg_logprob * n_tokens
            weight += n_tokens
            words.extend(seg_words)
            if on_segment is not None:
                on_segment(kept[-1])
        confidence = math.exp(logprob_sum / weight) if weight else 0.0
        confidence = min(1.0, max(0.0, confidence))
        text = " ".join(seg.text for seg in kept).strip()
        return Recognition(
            text=text,
            confidence=confidence,
            language=info.language,
            language_probability=float(info.language_probability),
            segments=tuple(kept),
            words=tuple(words),
            duration=len(samples) / SAMPLE_RATE,
            low_confidence=is_low_confidence(text, confidence, self.config.low_confidence_threshold),
            filtered=tuple(dropped),
            decode_s=time.perf_counter() - started,
        )

    def submit(self, fn: Callable[[], T], priority: int = PRIORITY_FINAL) -> concurrent.futures.Future[T]:
        return self.queue.submit(fn, priority)

    async def run(self, fn: Callable[[], T], priority: int = PRIORITY_FINAL) -> T:
        """Run ``fn`` on a worker thread; ``BUSY`` at once when the queue is full."""
        return await asyncio.wrap_future(self.submit(fn, priority))

    async def warm_up(self) -> None:
        """Load the model and decode one second of silence so the first real call is not slow."""
        await self.run(
            lambda: self.recognize(np.zeros(SAMPLE_RATE, np.float32), language="en", word_timestamps=False)
        )

    def close(self) -> None:
        self.queue.close()
