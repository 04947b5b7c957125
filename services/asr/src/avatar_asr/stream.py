"""One live audio stream: VAD endpointing, partial re-decodes and a speculative final decode.

Whisper costs about a second per call on a small CPU whatever the audio length, so the stream
decodes as little as it can:

* a partial is re-decoded only when at least ``partial_interval_ms`` of new audio arrived, only while
  the person is speaking, and never while another decode of this stream is in flight;
* when speech pauses for ``speculative_silence_ms`` the final decode starts at once, in the shadow of
  the ``min_silence_ms`` the endpoint must wait anyway; if speech resumes the speculative job is
  cancelled (or, when already running, its result discarded), and if the endpoint comes, the final is
  usually ready already.

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
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.engine import PRIORITY_FINAL, PRIORITY_PARTIAL, Recognition, WhisperEngine
from avatar_asr.errors import ASRError
from avatar_asr.vad import FRAME, FRAME_MS, FloatAudio, SileroVAD, VADState
from avatar_common.audio import pcm16_to_float, resample

log = logging.getLogger(__name__)

MIN_STREAM_RATE = 8000
MAX_STREAM_RATE = 48000
_PREROLL_MS = 300.0
_TAIL_PAD_MS = 200.0


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


@dataclass(slots=True)
class _Speculation:
    future: concurrent.futures.Future[Recognition]
    end_sample: int


class RecognitionSession:
    """A live stream: push PCM16 audio, iterate :class:`StreamEvent` s until ``END``."""

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
        self._total = 0  # 16 kHz samples framed so far
        self._preroll: deque[FloatAudio] = deque(maxlen=max(1, int(_PREROLL_MS / FRAME_MS)))
        self._utt: list[FloatAudio] = []
        self._utt_start = 0
        self._in_speech = False
        self._confirmed = False
        self._speech_frames = 0
        self._silence_frames = 0
        self._speech_end = 0
        self._speech_end_wall = 0.0
        self._generation = 0
        self._heard_since_flush = False
        self._partial_task: asyncio.Task[None] | None = None
        self._last_partial_len = 0
        self._last_partial_text = ""
        self._spec: _Speculation | None = None
        self._final_chain: asyncio.Task[None] | None = None
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
            self._put(
                StreamEvent(
                    EventKind.ERROR, code=exc.code, message=exc.message, stream_time_ms=self._ms(self._total)
                )
            )
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
            speech = 0
            for frame, p in zip(frames, probs, strict=True):
                self._total += FRAME
                speech += p >= self._cfg.vad_threshold
                self._on_frame(frame, p)
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
            if self._in_speech and self._confirmed:
                self._endpoint()
            elif not self._heard_since_flush:
                self._put(
                    StreamEvent(
                        EventKind.ERROR,
                        code="NO_SPEECH",
                        message="no speech was detected in the audio",
                        stream_time_ms=self._ms(self._total),
                    )
                )
            if self._in_speech:
                self._reset_utterance()
            self._heard_since_flush = False
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
        self._put(StreamEvent(EventKind.END, stream_time_ms=self._ms(self._total)))

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
            self._put(StreamEvent(EventKind.END, stream_time_ms=self._ms(self._total)))
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

    # -- the endpointing state machine ---------------------------------------------------------
    def _on_frame(self, frame: FloatAudio, p: float) -> None:
        cfg = self._cfg
        if not self._in_speech:
            self._preroll.append(frame)
            if p >= cfg.vad_threshold:
                self._in_speech = True
                self._utt = list(self._preroll)
                self._utt_start = self._total - FRAME * len(self._utt)
                self._speech_frames = 1
                self._silence_frames = 0
                self._mark_speech()
            return
        self._utt.append(frame)
        if p >= max(cfg.vad_threshold - 0.15, 0.01):
            if self._silence_frames and self._spec is not None:
                self._cancel_speculation()  # speech resumed: the speculative final is stale
                self.speculations_cancelled += 1
            self._silence_frames = 0
            self._speech_frames += 1
            self._mark_speech()
        else:
            self._silence_frames += 1
        if not self._confirmed and self._speech_frames * FRAME_MS >= cfg.min_speech_ms:
            self._confirmed = True
            self._heard_since_flush = True
            self._put_after_finals(
                StreamEvent(
                    EventKind.SPEECH_STARTED,
                    stream_time_ms=self._ms(self._total),
                    audio_start_ms=self._ms(self._utt_start),
                ),
                self._generation,
            )
        silence_ms = self._silence_frames * FRAME_MS
        if silence_ms >= cfg.min_silence_ms:
            if self._confirmed:
                self._endpoint()
            self._reset_utterance()
            return
        if self._confirmed and len(self._utt) * FRAME >= cfg.max_utterance_s * SAMPLE_RATE:
            self._endpoint()
            self._reset_utterance()
            return
        if not self._confirmed:
            return
        if silence_ms >= cfg.speculative_silence_ms and self._spec is None:
            self._start_speculation()
        elif self._silence_frames == 0:
            self._maybe_partial()

    def _mark_speech(self) -> None:
        self._speech_end = self._total
        self._speech_end_wall = time.perf_counter()

    def _reset_utterance(self) -> None:
        self._cancel_speculation()
        self._in_speech = False
        self._confirmed = False
        self._utt = []
        self._speech_frames = 0
        self._silence_frames = 0
        self._last_partial_len = 0
        self._last_partial_text = ""
        self._generation += 1

    def _utterance_audio(self) -> FloatAudio:
        """The utterance up to shortly after the last speech frame (trailing silence trimmed)."""
        audio = np.concatenate(self._utt) if self._utt else np.zeros(0, np.float32)
        keep = self._speech_end - self._utt_start + int(_TAIL_PAD_MS * SAMPLE_RATE / 1000)
        return audio[: max(0, min(len(audio), keep))]

    # -- decodes ------------------------------------------------------------------------------
    def _decode_fn(self, audio: FloatAudio, *, words: bool) -> Callable[[], Recognition]:
        language = self.language

        def run() -> Recognition:
            return self._engine.recognize(audio, language=language, word_timestamps=words)

        return run

    def _maybe_partial(self) -> None:
        if self._partial_task is not None and not self._partial_task.done():
            return
        length = len(self._utt) * FRAME
        if length - self._last_partial_len < self._cfg.partial_interval_ms * SAMPLE_RATE / 1000:
            return
        self._last_partial_len = length
        audio = np.concatenate(self._utt)
        try:
            future = self._engine.submit(self._decode_fn(audio, words=False), PRIORITY_PARTIAL)
        except ASRError:
            return  # partials are best effort: skip one when the queue is full
        self._partial_task = self._spawn(self._deliver_partial(future, self._generation, len(audio)))

    async def _deliver_partial(
        self, future: concurrent.futures.Future[Recognition], generation: int, n_samples: int
    ) -> None:
        snapshot_wall = time.perf_counter()
        snapshot_end = self._total
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
                stream_time_ms=self._ms(self._total),
                audio_start_ms=self._ms(self._utt_start),
                audio_end_ms=self._ms(snapshot_end),
                latency_ms=1000 * latency,
            ),
            generation,
        )

    def _start_speculation(self) -> None:
        audio = self._utterance_audio()
        try:
            future = self._engine.submit(self._decode_fn(audio, words=True), PRIORITY_FINAL)
        except ASRError:
            return  # the endpoint will try again (and report BUSY if it must)
        self._spec = _Speculation(future, self._speech_end)
        self.speculations_started += 1

    def _cancel_speculation(self) -> None:
        if self._spec is not None:
            self._spec.future.cancel()  # a job already running finishes; its result is ignored
            self._spec = None

    def _endpoint(self) -> None:
        """The utterance ended: hand its final decode (speculative if still valid) to the chain."""
        decided_wall = time.perf_counter()
        audio = self._utterance_audio()
        # Speech resuming cancels the speculation, so one still here covers exactly this utterance.
        spec = self._spec if self._spec is not None and self._spec.end_sample == self._speech_end else None
        self._spec = None  # ownership passes to the final task
        if spec is not None:
            self.speculations_used += 1
        future: concurrent.futures.Future[Recognition] | None = spec.future if spec else None
        error: ASRError | None = None
        if future is None:
            try:
                future = self._engine.submit(self._decode_fn(audio, words=True), PRIORITY_FINAL)
            except ASRError as exc:
                error = exc
        start_ms = self._ms(self._utt_start)
        end_ms = self._ms(self._utt_start + len(audio))
        previous = self._final_chain
        self._final_chain = self._spawn(
            self._deliver_final(
                previous, future, error, audio, start_ms, end_ms, decided_wall, self._speech_end_wall
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
            self._put(
                StreamEvent(
                    EventKind.ERROR,
                    code=error.code,
                    message=error.message,
                    stream_time_ms=self._ms(self._total),
                )
            )
            return
        try:
            rec = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except ASRError as exc:
            self._put(
                StreamEvent(
                    EventKind.ERROR, code=exc.code, message=exc.message, stream_time_ms=self._ms(self._total)
                )
            )
            return
        except Exception as exc:
            log.exception("final decode failed")
            self._put(
                StreamEvent(
                    EventKind.ERROR,
                    code="ASR_FAILED",
                    message=f"recognition failed: {exc}",
                    stream_time_ms=self._ms(self._total),
                )
            )
            return
        now = time.perf_counter()
        self._observer.decoded("final", rec)
        self._observer.result_latency("final", now - decided_wall)
        self._put(
            StreamEvent(
                EventKind.FINAL,
                rec,
                stream_time_ms=self._ms(self._total),
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

    def _put(self, event: StreamEvent) -> None:
        self._events.put_nowait(event)

    @staticmethod
    def _ms(samples: int) -> float:
        return 1000.0 * samples / SAMPLE_RATE
