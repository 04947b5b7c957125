"""One live audio stream: VAD endpointing, partial re-decodes and a speculative final decode.

Whisper costs about a second per call on a small CPU whatever the audio length, so the stream
decodes as little as it can:

* a partial is re-decoded only when at least ``partial_interval_ms`` of new audio arrived, only while
  the person is speaking, and never while another decode of this stream is in flight;
* when speech pauses for ``speculative_silence_ms`` (or the last loud frame is ``speculative_quiet_ms``
  behind, the quiet rule of ``endpointing.py``) the final decode starts at once, in the shadow of
  the ``min_silence_ms`` the endpoint must wait anyway; if speech resumes the speculative job is
  cancelled (or, when already running, its result becomes a partial), and if the endpoint comes, the
  final is usually ready already.

Events of a stream are delivered in order: ``FINAL`` of an utterance comes before anything about the
next one, and ``FINAL``/``ERROR``/``END`` are never dropped; a stale partial may be.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.context import AudioTape, FinalHistory, PastFinal
from avatar_asr.endpointing import (
    CancelReason,
    Decision,
    Endpoint,
    Endpointer,
    EndpointingConfig,
    NoSpeech,
    PartialDue,
    SpeculationCancelled,
    SpeculationStarted,
    SpeechStarted,
    UtteranceClosed,
    UtteranceOpened,
    looks_complete,
)
from avatar_asr.engine import PRIORITY_FINAL, PRIORITY_PARTIAL, Recognition, WhisperEngine, since
from avatar_asr.errors import ASRError
from avatar_asr.vad import FRAME, FloatAudio, SileroVAD, VADState
from avatar_common.audio import pcm16_to_float, resample

log = logging.getLogger(__name__)

MIN_STREAM_RATE = 8000
MAX_STREAM_RATE = 48000


class EventKind(enum.StrEnum):
    SPEECH_STARTED = "speech_started"
    PARTIAL = "partial"
    FINAL = "final"
    ERROR = "error"
    END = "end"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What a stream reports. Times are stream times (ms of 16 kHz audio since the stream opened).

    Attributes:
        kind: What happened.
        recognition: The decode behind a ``PARTIAL`` or ``FINAL``.
        code: Error code of an ``ERROR``.
        message: Error message of an ``ERROR``.
        stream_time_ms: Audio seen when the event was produced.
        audio_start_ms: Where the utterance began.
        audio_end_ms: Where the audio this result covers ends.
        latency_ms: ``FINAL``: from the endpoint decision to the result; ``PARTIAL``: from the audio
            snapshot to the result.
        since_speech_end_ms: ``FINAL``: from the last speech audio arriving to the result.
        utterance: ``FINAL``: the utterance's 16 kHz samples.
    """

    kind: EventKind
    recognition: Recognition | None = None
    code: str = ""
    message: str = ""
    stream_time_ms: float = 0.0
    audio_start_ms: float = 0.0
    audio_end_ms: float = 0.0
    latency_ms: float = 0.0
    since_speech_end_ms: float = 0.0
    utterance: FloatAudio | None = None


class StreamObserver:
    """Hooks for metrics; the default does nothing."""

    def decoded(self, kind: str, recognition: Recognition) -> None:
        """A decode finished (``kind`` is ``partial`` or ``final``)."""

    def result_latency(self, kind: str, seconds: float) -> None:
        """A result was delivered ``seconds`` after its audio was available."""

    def vad_frames(self, speech: int, total: int) -> None:
        """The VAD classified ``total`` frames, ``speech`` of them as speech."""


class RecognitionSession:
    """A live stream: push PCM16 audio, iterate :class:`StreamEvent` s until ``END``.

    Endpointing is :class:`~avatar_asr.endpointing.Endpointer` (pure); this class feeds it VAD
    probabilities and carries out its decisions: decodes, event delivery, cancellation.
    """

    def __init__(
        self,
        config: ASRConfig,
        engine: WhisperEngine,
        vad: SileroVAD,
        *,
        language: str | None = None,
        observer: StreamObserver | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._cfg = config
        self._engine = engine
        self._vad = vad
        self.language = language or config.language
        self._observer = observer or StreamObserver()
        self._on_close = on_close
        self._events: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._push_lock = asyncio.Lock()
        self._vad_state = VADState()
        self._pending = np.zeros(0, np.float32)
        self._tape = AudioTape()
        self._ep = Endpointer(EndpointingConfig.from_asr(config))
        self._speech_end_seen = 0
        self._speech_end_wall = 0.0
        self._generation = 0
        self._last_partial_text = ""
        self._spec: concurrent.futures.Future[Recognition] | None = None
        self._spec_start = 0
        self._final_chain: asyncio.Task[None] | None = None
        self._history = FinalHistory(gap_s=config.context_gap_s, audio_s=config.context_audio_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = False
        self._closed = False
        self._speech_frames_total = 0
        self._frames_total = 0
        #: Speculative finals started, discarded because speech resumed, and used at an endpoint.
        self.speculations_started = 0
        self.speculations_cancelled = 0
        self.speculations_used = 0

    # -- input -------------------------------------------------------------------------------
    async def push_pcm(self, pcm: bytes, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        """Feed PCM16 little-endian audio; a bad chunk yields an ``ERROR`` event, never an exception."""
        try:
            samples = self._validate(pcm, sample_rate, channels)
        except ASRError as exc:
            self._put(self._error(exc.code, exc.message))
            return
        await self.push_samples(samples)

    def _validate(self, pcm: bytes, sample_rate: int, channels: int) -> FloatAudio:
        if self._ended or self._closed:
            raise ASRError("STREAM_ENDED", "the stream has ended; open a new one")
        if not MIN_STREAM_RATE <= sample_rate <= MAX_STREAM_RATE:
            raise ASRError(
                "UNSUPPORTED_SAMPLE_RATE",
                f"sample rate {sample_rate} Hz is outside {MIN_STREAM_RATE}-{MAX_STREAM_RATE} Hz",
            )
        if channels not in (1, 2):
            raise ASRError("INVALID_AUDIO", f"{channels} channels: send mono or stereo PCM16")
        if len(pcm) % (2 * channels):
            raise ASRError("INVALID_AUDIO", "PCM16 audio must be whole 16-bit samples (odd byte count)")
        if len(pcm) / (2 * channels) / sample_rate > self._cfg.max_chunk_s:
            raise ASRError(
                "INVALID_AUDIO", f"a chunk may hold at most {self._cfg.max_chunk_s:.0f} s of audio"
            )
        samples = pcm16_to_float(pcm)
        if channels == 2:
            samples = samples.reshape(-1, 2).mean(axis=1).astype(np.float32)
        return resample(samples, sample_rate, SAMPLE_RATE)

    async def push_samples(self, samples: FloatAudio) -> None:
        """Feed float32 mono 16 kHz samples."""
        if self._ended or self._closed:
            self._put(
                StreamEvent(
                    EventKind.ERROR, code="STREAM_ENDED", message="the stream has ended; open a new one"
                )
            )
            return
        async with self._push_lock:
            data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
            n = len(data) // FRAME
            self._pending = data[n * FRAME :].copy()
            if n == 0:
                return
            frames = data[: n * FRAME].reshape(n, FRAME)
            # The VAD is cheap (~0.3 ms a frame) but still a native call: keep it off the event loop.
            probs = await asyncio.to_thread(self._vad.process_frames, self._vad_state, frames)
            levels = np.sqrt(np.mean(np.square(frames), axis=1)).tolist()  # RMS: the quiet rule
            self._tape.append(frames.reshape(-1))
            speech = 0
            for p, level in zip(probs, levels, strict=True):
                speech += p >= self._cfg.vad_threshold
                for decision in self._ep.feed(p, level):
                    self._apply(decision)
                if self._ep.speech_end != self._speech_end_seen:
                    self._speech_end_seen = self._ep.speech_end
                    self._speech_end_wall = time.perf_counter()
            # Keep recent audio too: the context of the next final (see _final_fn).
            self._tape.trim(
                min(self._ep.retain_from, self._ep.position - int(self._history.audio_s * SAMPLE_RATE))
            )
            self._frames_total += n
            self._speech_frames_total += speech
            self._observer.vad_frames(speech, n)

    async def flush(self) -> None:
        """Finalize the utterance in progress now (push-to-talk released); the stream stays open.

        Reports ``NO_SPEECH`` when nothing was said since the previous flush.
        """
        async with self._push_lock:
            if self._closed:
                return
            for decision in self._ep.flush():
                self._apply(decision)
        chain = self._final_chain
        if chain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(chain)

    async def end_input(self) -> None:
        """No more audio: finalize the utterance in progress, then the event iterator ends."""
        if self._ended or self._closed:
            return
        await self.flush()
        self._ended = True
        self._put(StreamEvent(EventKind.END, stream_time_ms=self._ms(self._ep.position)))

    async def aclose(self) -> None:
        """Cancel outstanding work and end the event iterator."""
        if self._closed:
            return
        self._closed = True
        self._cancel_speculation()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self._ended:
            self._ended = True
            self._put(StreamEvent(EventKind.END, stream_time_ms=self._ms(self._ep.position)))
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Events until (and including) ``END``."""
        while True:
            event = await self._events.get()
            yield event
            if event.kind is EventKind.END:
                return

    @property
    def speech_ratio(self) -> float:
        return self._speech_frames_total / self._frames_total if self._frames_total else 0.0

    # -- carrying out the endpointer's decisions ------------------------------------------------
    def _apply(self, decision: Decision) -> None:
        match decision:
            case SpeechStarted(start=start):
                self._put_after_finals(
                    StreamEvent(
                        EventKind.SPEECH_STARTED,
                        stream_time_ms=self._ms(self._ep.position),
                        audio_start_ms=self._ms(start),
                    ),
                    self._generation,
                )
            case PartialDue(start=start, end=end):
                self._start_partial(start, end)
            case SpeculationStarted(start=start, end=end, speech_end=speech_end, quiet=quiet):
                self._start_speculation(start, end, speech_end, quiet)
            case SpeculationCancelled(reason=reason):
                if reason is CancelReason.SPEECH_RESUMED:
                    self.speculations_cancelled += 1
                    self._speculation_as_partial()
                self._cancel_speculation()
            case Endpoint():
                self._endpoint(decision)
            case UtteranceClosed():
                self._generation += 1
                self._last_partial_text = ""
            case NoSpeech():
                self._put(self._error("NO_SPEECH", "no speech was detected in the audio"))
            case UtteranceOpened():
                pass

    # -- decodes ------------------------------------------------------------------------------
    def _decode_fn(self, audio: FloatAudio) -> Callable[[], Recognition]:
        """A partial's decode job."""
        language = self.language

        def run() -> Recognition:
            return self._engine.recognize(audio, language=language, word_timestamps=False)

        return run

    def _final_fn(self, start: int, end: int, pad_to: int | None = None) -> Callable[[], Recognition]:
        """The final decode of ``[start, end)``, in the context of what came just before.

        When an earlier utterance of this stream ended by a short pause (``context.py``), its audio
        is decoded with this one and only the words after the pause are kept: a sentence cut by a
        pause is decoded as the whole it is. The prompt is the text of the finals before the decoded
        audio, read when the job runs (a final queued behind the previous one sees its text).

        ``pad_to``: a speculative decode that starts before the endpoint's tail of silence has
        arrived gets the rest of it as digital silence, so it decodes as long an input as the
        endpoint's own decode would (docs/adr/0014-voice-latency.md, "Seventh round": Whisper's
        words changed with the length of the tail).
        """
        language = self.language
        threshold = self._cfg.low_confidence_threshold
        history = self._history
        context = history.audio_context(start, end, self._tape.start)
        own = self._tape.slice(start, end)
        audio = self._tape.slice(context.start, end) if context else own
        if pad_to is not None and pad_to > end:
            # Digital silence (repeating the tail heard so far was tried: it repeats the decay of
            # the last word, and Whisper heard words in it).
            silence = np.zeros(pad_to - end, np.float32)
            own = np.concatenate([own, silence])
            audio = np.concatenate([audio, silence]) if context else own
            end = pad_to

        def alone() -> Recognition:
            return self._engine.recognize(own, language=language, prompt=history.prompt(start))

        def run() -> Recognition:
            if context is None:
                return alone()
            # Audio joined across a pause keeps Whisper's full window: on speech cut at its pauses the
            # short window loses words there (docs/adr/0014-voice-latency.md).
            rec = self._engine.recognize(
                audio, language=language, prompt=history.prompt(context.start), short_window=False
            )
            new = since(
                rec,
                (context.boundary - context.start) / SAMPLE_RATE,
                (start - context.start) / SAMPLE_RATE,
                (end - start) / SAMPLE_RATE,
                threshold,
            )
            return new if new.text else alone()

        return run

    def _start_partial(self, start: int, end: int) -> None:
        audio = self._tape.slice(start, end)
        try:
            future = self._engine.submit(self._decode_fn(audio), PRIORITY_PARTIAL, self)
        except ASRError:
            self._ep.partial_finished()  # partials are best effort: skip one when the queue is full
            return
        task = self._spawn(self._deliver_partial(future, self._generation, start))
        task.add_done_callback(lambda _task: self._ep.partial_finished())

    async def _deliver_partial(
        self, future: concurrent.futures.Future[Recognition], generation: int, start: int
    ) -> None:
        snapshot_wall = time.perf_counter()
        snapshot_end = self._ep.position
        try:
            rec = await asyncio.wrap_future(future)
        except ASRError:
            return
        except Exception:
            log.exception("partial decode failed")
            return
        self._observer.decoded("partial", rec)
        if (
            generation != self._generation
            or self._closed
            or not rec.text
            or rec.text == self._last_partial_text
        ):
            return
        self._last_partial_text = rec.text
        latency = time.perf_counter() - snapshot_wall
        self._observer.result_latency("partial", latency)
        self._put_after_finals(
            StreamEvent(
                EventKind.PARTIAL,
                rec,
                stream_time_ms=self._ms(self._ep.position),
                audio_start_ms=self._ms(start),
                audio_end_ms=self._ms(snapshot_end),
                latency_ms=1000 * latency,
            ),
            generation,
        )

    def _start_speculation(self, start: int, end: int, speech_end: int, quiet: bool) -> None:
        if quiet and not self._engine.queue.idle():
            # The quiet rule guesses early and is wrong at some pauses inside a sentence: it only
            # uses a recognizer that is free, never delaying another stream's final (many sessions).
            self._ep.speculation_refused()
            return
        try:
            pad_to = speech_end + self._ep.config.tail_pad_samples  # the endpoint's own end
            spec = self._engine.submit(self._final_fn(start, end, pad_to), PRIORITY_FINAL, self)
        except ASRError:
            self._ep.speculation_refused()  # the endpoint will try again (and report BUSY if it must)
            return
        self._spec = spec
        self._spec_start = start
        self.speculations_started += 1
        if self._ep.config.complete_silence_ms > 0:
            loop = asyncio.get_running_loop()

            def decoded(future: concurrent.futures.Future[Recognition]) -> None:  # a worker thread
                with contextlib.suppress(RuntimeError):  # the loop is gone: the stream is too
                    loop.call_soon_threadsafe(self._speculation_decoded, future, speech_end)

            spec.add_done_callback(decoded)

    def _speculation_decoded(self, future: concurrent.futures.Future[Recognition], speech_end: int) -> None:
        """The turn detector: a speculative transcript that reads as finished ends the turn sooner
        (``endpointing.looks_complete``)."""
        if future is not self._spec or future.cancelled() or future.exception() is not None:
            return
        if looks_complete(future.result().text):
            for decision in self._ep.speculation_complete(speech_end):
                self._apply(decision)

    def _speculation_as_partial(self) -> None:
        """Speech resumed while the speculative final was already being decoded: its words are the
        transcript so far, so they are delivered as a partial (the endpointer counts it as one)."""
        spec, start = self._spec, self._spec_start
        if spec is None or spec.cancel():  # still queued: cancelled, nothing decoded
            return
        self._spawn(self._deliver_partial(spec, self._generation, start))

    def _cancel_speculation(self) -> None:
        if self._spec is not None:
            self._spec.cancel()  # a job already running finishes; its result is ignored
            self._spec = None

    def _endpoint(self, decision: Endpoint) -> None:
        """The utterance ended: hand its final decode (speculative if still valid) to the chain."""
        decided_wall = time.perf_counter()
        audio = self._tape.slice(decision.start, decision.end)
        future = self._spec if decision.use_speculation else None
        if future is None:
            self._cancel_speculation()
        else:
            self._spec = None  # ownership passes to the final task
            self.speculations_used += 1
        error: ASRError | None = None
        if future is None:
            try:
                future = self._engine.submit(
                    self._final_fn(decision.start, decision.end), PRIORITY_FINAL, self
                )
            except ASRError as exc:
                error = exc
        if future is not None:
            self._history.add(PastFinal(decision.start, decision.end, decision.speech_end, future))
        previous = self._final_chain
        self._final_chain = self._spawn(
            self._deliver_final(
                previous,
                future,
                error,
                audio,
                self._ms(decision.start),
                self._ms(decision.start + len(audio)),
                decided_wall,
                self._speech_end_wall,
            )
        )

    async def _deliver_final(
        self,
        previous: asyncio.Task[None] | None,
        future: concurrent.futures.Future[Recognition] | None,
        error: ASRError | None,
        audio: FloatAudio,
        start_ms: float,
        end_ms: float,
        decided_wall: float,
        speech_end_wall: float,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        if future is None:
            assert error is not None
            self._put(self._error(error.code, error.message))
            return
        try:
            rec = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except ASRError as exc:
            self._put(self._error(exc.code, exc.message))
            return
        except Exception as exc:
            log.exception("final decode failed")
            self._put(self._error("ASR_FAILED", f"recognition failed: {exc}"))
            return
        now = time.perf_counter()
        self._observer.decoded("final", rec)
        self._observer.result_latency("final", now - decided_wall)
        self._put(
            StreamEvent(
                EventKind.FINAL,
                rec,
                stream_time_ms=self._ms(self._ep.position),
                audio_start_ms=start_ms,
                audio_end_ms=end_ms,
                latency_ms=1000 * (now - decided_wall),
                since_speech_end_ms=1000 * (now - speech_end_wall),
                utterance=audio,
            )
        )

    # -- plumbing -----------------------------------------------------------------------------
    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _put_after_finals(self, event: StreamEvent, generation: int) -> None:
        """Deliver an event of the current utterance after the previous utterance's final."""
        chain = self._final_chain
        if chain is None or chain.done():
            self._put(event)
            return

        async def later() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(chain)
            if generation == self._generation or event.kind is EventKind.SPEECH_STARTED:
                self._put(event)

        self._spawn(later())

    def _error(self, code: str, message: str) -> StreamEvent:
        return StreamEvent(
            EventKind.ERROR, code=code, message=message, stream_time_ms=self._ms(self._ep.position)
        )

    def _put(self, event: StreamEvent) -> None:
        self._events.put_nowait(event)

    @staticmethod
    def _ms(samples: int) -> float:
        return 1000.0 * samples / SAMPLE_RATE
