"""faster-whisper behind a bounded, fair work queue shared by every stream and upload.

One ``WhisperModel`` is loaded once. Whisper calls run on worker threads (never on the event
loop), finals and partials in separate lanes so a final never queues behind a partial; waiting
jobs are served round-robin between streams with a bounded wait (``BUSY`` after it), partials are
shed first under load, a job cancelled before it started is skipped, and when ``max_queue`` jobs
are already waiting or running a new one is refused with ``BUSY`` at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.errors import ASRError, BusyError
from avatar_asr.hallucination import SegmentEvidence, is_hallucination
from avatar_asr.vad import FloatAudio
from avatar_common.fairness import FairSlots

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


class InferenceQueue:
    """Whisper jobs on worker threads, let in by fair slots (:mod:`avatar_common.fairness`).

    Two lanes: finals (and uploads) have ``workers`` slots, partials one slot of their own, so a
    final never waits behind a partial decode that is already running (a CTranslate2 call cannot
    be interrupted): it runs beside it, sharing the CPU, which on a small machine still beats
    queueing behind a whole second Whisper call.

    Many sessions on one box (docs/architecture.md): in each lane, waiting jobs are served
    round-robin between streams (``key``), first come first served within a stream, so a stream
    with many jobs cannot starve another; no job is ever cancelled for another stream's sake. A
    final waits at most ``final_wait_s`` and then fails ``BUSY`` (the stream reports it, the
    session is told); partials are best effort and the first thing shed under load: one is refused
    while finals wait, waiting partials are sent away when a final has to wait, and a partial waits
    at most ``partial_wait_s``. ``max_pending`` bounds the jobs waiting or running (both lanes);
    beyond it a job is refused at once, and partials may hold at most half of it.

    :meth:`submit` must be called on the event loop that drives the slots.
    """

    def __init__(
        self, workers: int, max_pending: int, *, final_wait_s: float = 20.0, partial_wait_s: float = 1.0
    ) -> None:
        self._slots = {PRIORITY_FINAL: FairSlots(max(1, workers)), PRIORITY_PARTIAL: FairSlots(1)}
        self._waits = {PRIORITY_FINAL: final_wait_s, PRIORITY_PARTIAL: partial_wait_s}
        self._max_pending = max(1, max_pending)
        self._max_partials = max(1, self._max_pending // 2)
        self._pending = 0
        self._partials = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Partials refused or sent away under load, and jobs that failed ``BUSY`` after waiting.
        self.partials_shed = 0
        self.timed_out = 0

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def concurrency(self) -> int:
        """Jobs that may run at once (all lanes)."""
        return sum(slots.size for slots in self._slots.values())

    def waiting(self, priority: int = PRIORITY_FINAL) -> int:
        """Jobs of a lane waiting for their slot."""
        return self._slots[_lane(priority)].waiting

    def idle(self, priority: int = PRIORITY_FINAL) -> bool:
        """A job of this lane would start at once: a slot is free and nobody waits for one."""
        slots = self._slots[_lane(priority)]
        return slots.in_use < slots.size and not slots.waiting

    def submit(
        self, fn: Callable[[], T], priority: int, key: Hashable = None
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` in its lane for stream ``key``; raises :class:`BusyError` at once when the
        queue is full or (a partial) when finals are waiting. Cancelling the returned future before
        the job started takes it out of line."""
        priority = _lane(priority)
        if self._closed:
            raise ASRError("SHUTTING_DOWN", "the speech recognizer is shutting down", 503)
        finals = self._slots[PRIORITY_FINAL]
        partial = priority == PRIORITY_PARTIAL
        if partial and finals.waiting:
            self.partials_shed += 1
            raise BusyError("partial transcripts are paused while final decodes wait")
        if self._pending >= self._max_pending or (partial and self._partials >= self._max_partials):
            self.partials_shed += partial
            raise BusyError()
        if not partial and finals.in_use >= finals.size:
            self._slots[PRIORITY_PARTIAL].shed()  # finals come first (each shed job counts itself)
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="asr-whisper"
            )
        self._pending += 1
        self._partials += partial
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        task = loop.create_task(self._drive(fn, priority, key, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def withdrawn(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled() and not task.done():
                loop.call_soon_threadsafe(task.cancel)

        future.add_done_callback(withdrawn)
        return future

    async def _drive(
        self, fn: Callable[[], T], priority: int, key: Hashable, future: concurrent.futures.Future[T]
    ) -> None:
        slots = self._slots[priority]
        held = False
        try:
            held = await slots.acquire(self._waits[priority], key)
            if not held:
                if priority == PRIORITY_PARTIAL:
                    self.partials_shed += 1
                else:
                    self.timed_out += 1
                if not future.done():
                    future.set_exception(_busy(priority, self._waits[priority], self._closed))
                return
            if not future.set_running_or_notify_cancel():
                return  # withdrawn while it waited
            assert self._executor is not None
            try:
                result = await asyncio.get_running_loop().run_in_executor(self._executor, fn)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
            else:
                future.set_result(result)
        except asyncio.CancelledError:  # withdrawn (the future is cancelled already) or closing
            if not future.done() and not future.cancel():
                future.set_exception(ASRError("SHUTTING_DOWN", "the speech recognizer is shutting down", 503))
        finally:
            if held:
                slots.release()
            self._pending -= 1
            self._partials -= priority == PRIORITY_PARTIAL

    def close(self) -> None:
        self._closed = True
        for slots in self._slots.values():
            slots.shed()
        for task in list(self._tasks):
            task.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _lane(priority: int) -> int:
    return PRIORITY_PARTIAL if priority == PRIORITY_PARTIAL else PRIORITY_FINAL


def _busy(priority: int, waited_s: float, closing: bool) -> ASRError:
    if closing:
        return ASRError("SHUTTING_DOWN", "the speech recognizer is shutting down", 503)
    if priority == PRIORITY_PARTIAL:
        return BusyError("partial transcript skipped: the recognizer is busy with final decodes")
    return BusyError(
        f"the speech recognizer was busy with other conversations for {waited_s:g} s and could not "
        "transcribe this utterance; please say it again"
    )


#: Mel frames per second of audio (Whisper's 10 ms hop) and its fixed window (30 s).
_FRAMES_PER_S = 100
_FULL_WINDOW_FRAMES = 3000


def window_frames(duration_s: float, pad_s: float, min_window_s: float, from_s: float = 0.0) -> int | None:
    """Encoder frames for one audio of ``duration_s`` (docs/adr/0014-voice-latency.md).

    Whisper pads every window to 30 s, and on a CPU the encoder's cost follows the window, not the
    speech: a 5 s utterance costs as much as 30 s of audio. Encoding only the audio plus
    ``pad_s`` of the padding (whole seconds, at least ``min_window_s``) gives the same words on our
    speech clips, within one word in a hundred, at about a third of the cost; windows much shorter
    than ~10 s start to lose words.
    ``None`` keeps the full window: ``pad_s`` 0, audio shorter than ``from_s`` (on ~1 s of speech
    the short window loses the first word), or audio that does not fit one window.
    """
    if pad_s <= 0 or duration_s < from_s or duration_s + pad_s > _FULL_WINDOW_FRAMES / _FRAMES_PER_S:
        return None
    return min(_FULL_WINDOW_FRAMES, math.ceil(max(min_window_s, duration_s + pad_s)) * _FRAMES_PER_S)


_window = threading.local()


def _short_window_model(base: type[Any]) -> type[Any]:
    """A ``WhisperModel`` whose encoder sees only the frames set for the calling thread."""

    class ShortWindowWhisper(base):  # type: ignore[misc]
        def encode(self, features: Any) -> Any:
            frames: int | None = getattr(_window, "frames", None)
            if frames is not None and features.shape[-1] > frames:
                features = np.ascontiguousarray(features[..., :frames])
            return super().encode(features)

    return ShortWindowWhisper


class WhisperEngine:
    """The one loaded Whisper model and the queue in front of it."""

    def __init__(self, config: ASRConfig) -> None:
        self.config = config
        self._model: Any = None
        self._load_lock = threading.Lock()
        self.queue = InferenceQueue(
            config.workers,
            config.max_queue,
            final_wait_s=config.queue_timeout_s,
            partial_wait_s=config.partial_wait_s,
        )
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
                self._model = _short_window_model(WhisperModel)(
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
        short_window: bool = True,
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
            short_window: Encode audio that fits one window in a window sized to it
                (:func:`window_frames`); ``False`` keeps Whisper's fixed 30 s window.
        """
        self.load()
        started = time.perf_counter()
        # Set for this worker thread only: the segments below are decoded lazily on this thread.
        _window.frames = (
            None
            if not short_window
            else window_frames(
                len(samples) / SAMPLE_RATE,
                self.config.window_pad_s,
                self.config.min_window_s,
                self.config.short_window_from_s,
            )
        )
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

    def submit(
        self, fn: Callable[[], T], priority: int = PRIORITY_FINAL, key: Hashable = None
    ) -> concurrent.futures.Future[T]:
        return self.queue.submit(fn, priority, key)

    async def run(self, fn: Callable[[], T], priority: int = PRIORITY_FINAL, key: Hashable = None) -> T:
        """Run ``fn`` on a worker thread once its turn comes (:class:`InferenceQueue`); ``BUSY``
        when the queue is full or no slot came in time."""
        return await asyncio.wrap_future(self.submit(fn, priority, key))

    async def warm_up(self) -> None:
        """Load the model and decode one second of silence so the first real call is not slow."""
        await self.run(
            lambda: self.recognize(np.zeros(SAMPLE_RATE, np.float32), language="en", word_timestamps=False)
        )

    def close(self) -> None:
        self.queue.close()
