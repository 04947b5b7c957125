"""The recognizer as a whole: one engine, one VAD, live streams and whole-file transcription.

Used in-process by the orchestrator (embedded placement) and by this package's FastAPI app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.engine import (
    PRIORITY_FINAL,
    TEMPERATURE_FALLBACK,
    Recognition,
    Segment,
    WhisperEngine,
    Word,
)
from avatar_asr.errors import ASRError, BusyError
from avatar_asr.layout import SpeechLayout
from avatar_asr.stream import RecognitionSession, StreamObserver
from avatar_asr.vad import FloatAudio, SileroVAD, SpeechRegion
from avatar_common.audio import AudioDecodeError, decode_audio, resample

#: Whisper's tasks: recognition in the spoken language, or translation into English.
TASKS = ("transcribe", "translate")
#: Containers accepted for upload (as reported by libsndfile / FFmpeg).
ACCEPTED_CONTAINERS = frozenset({"wav", "wave", "flac", "ogg", "opus", "mp3", "webm", "matroska"})
#: Pauses up to this long stay in the audio Whisper decodes; longer ones shrink to the VAD's padding.
FILE_MAX_GAP_S = 1.0
#: Shortest speech region a file keeps: short answers ("No.") are words too; Whisper and the
#: hallucination filter judge what the VAD let through.
FILE_MIN_SPEECH_MS = 120
MIN_FILE_RATE = 4000
MAX_FILE_RATE = 192000

_DECODE_ERRORS = {
    "empty": ("EMPTY_AUDIO", 400),
    "too_long": ("AUDIO_TOO_LONG", 413),
    "no_audio_stream": ("INVALID_AUDIO", 400),
    "corrupt": ("INVALID_AUDIO", 400),
    "undecodable": ("INVALID_AUDIO", 400),
}


@dataclass(frozen=True, slots=True)
class FileTranscription:
    """A whole-file result: the decode plus what the VAD found."""

    recognition: Recognition
    speech: tuple[SpeechRegion, ...]
    duration: float
    source_format: str
    source_rate: int
    source_channels: int
    notice: str | None = None  # ``NO_SPEECH`` when nothing was said


class ASRService:
    """Shared engine + VAD; opens streams and transcribes clips."""

    def __init__(
        self,
        config: ASRConfig,
        observer: StreamObserver | None = None,
        *,
        engine: WhisperEngine | None = None,
    ) -> None:
        self.config = config
        self.engine = engine or WhisperEngine(config)
        self.vad = SileroVAD(config.vad_model)
        self.observer = observer or StreamObserver()
        self._streams = 0
        self._lock = threading.Lock()

    @property
    def active_streams(self) -> int:
        return self._streams

    async def start(self, *, warm_up: bool = True) -> None:
        """Load the VAD and the Whisper model (off the event loop)."""
        await asyncio.to_thread(self.vad.load)
        if warm_up:
            await self.engine.warm_up()
        else:
            await asyncio.to_thread(self.engine.load)

    def close(self) -> None:
        self.engine.close()

    def open_stream(self, *, language: str | None = None) -> RecognitionSession:
        """A new live stream; ``BUSY`` when ``max_streams`` are open."""
        with self._lock:
            if self._streams >= self.config.max_streams:
                raise BusyError(f"{self.config.max_streams} streams are already open; retry later")
            self._streams += 1
        return RecognitionSession(
            self.config,
            self.engine,
            self.vad,
            language=language,
            observer=self.observer,
            on_close=self._stream_closed,
        )

    def _stream_closed(self) -> None:
        with self._lock:
            self._streams -= 1

    def decode_file(self, data: bytes) -> tuple[FloatAudio, str, int, int]:
        """Decode an upload to 16 kHz mono; clear ``ASRError`` s for every kind of bad file."""
        if len(data) > self.config.max_upload_bytes:
            raise ASRError(
                "FILE_TOO_LARGE",
                f"the file is larger than {self.config.max_upload_bytes // (1024 * 1024)} MiB",
                413,
            )
        try:
            decoded = decode_audio(data, max_seconds=self.config.max_audio_s)
        except AudioDecodeError as exc:
            code, status = _DECODE_ERRORS.get(exc.reason, ("INVALID_AUDIO", 400))
            raise ASRError(code, str(exc), status) from exc
        fmt = decoded.source_format.lower()
        if fmt not in ACCEPTED_CONTAINERS:
            raise ASRError(
                "UNSUPPORTED_FORMAT",
                f"{fmt!r} audio is not supported; send wav, flac, mp3, ogg/opus or webm",
                415,
            )
        if not MIN_FILE_RATE <= decoded.sample_rate <= MAX_FILE_RATE:
            raise ASRError(
                "UNSUPPORTED_SAMPLE_RATE",
                f"sample rate {decoded.sample_rate} Hz is outside {MIN_FILE_RATE}-{MAX_FILE_RATE} Hz",
            )
        samples = resample(decoded.samples, decoded.sample_rate, SAMPLE_RATE)
        return samples, fmt, decoded.sample_rate, decoded.source_channels

    async def transcribe_file(
        self,
        data: bytes,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: str = "transcribe",
    ) -> FileTranscription:
        """Decode, VAD and transcribe an uploaded file; no speech is an empty result with ``notice``
        ``NO_SPEECH`` (not an error: an OpenAI client expects an empty transcript). ``task``
        ``translate`` gives the English translation instead."""
        samples, fmt, rate, channels = await asyncio.to_thread(self.decode_file, data)
        return await self._transcribe(samples, language, prompt, temperature, fmt, rate, channels, task)

    async def transcribe_pcm(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: str = "transcribe",
        on_segment: Callable[[Segment], None] | None = None,
    ) -> FileTranscription:
        """Transcribe (or, ``task="translate"``, translate into English) a complete PCM16 mono clip;
        ``temperature`` 0 is Whisper's fallback sequence, another value is used as is.
        ``on_segment`` is called from the decoding thread with each kept segment as soon as it is
        decoded (times on the clip's clock), for streaming the transcript."""
        if task not in TASKS:
            raise ASRError("INVALID_INPUT", f"task must be one of {', '.join(TASKS)}")
        if not 0.0 <= temperature <= 1.0:
            raise ASRError("INVALID_INPUT", "temperature must be within 0..1")
        if not pcm:
            raise ASRError("EMPTY_AUDIO", "the audio is empty")
        if len(pcm) % 2:
            raise ASRError("INVALID_AUDIO", "PCM16 audio must be whole 16-bit samples (odd byte count)")
        if not MIN_FILE_RATE <= sample_rate <= MAX_FILE_RATE:
            raise ASRError(
                "UNSUPPORTED_SAMPLE_RATE",
                f"sample rate {sample_rate} Hz is outside {MIN_FILE_RATE}-{MAX_FILE_RATE} Hz",
            )
        if len(pcm) / 2 / sample_rate > self.config.max_audio_s:
            raise ASRError(
                "AUDIO_TOO_LONG", f"audio is longer than the {self.config.max_audio_s:.0f} s limit", 413
            )
        raw = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        samples = resample(raw, sample_rate, SAMPLE_RATE)
        result = await self._transcribe(
            samples, language, prompt, temperature, "pcm", sample_rate, 1, task, on_segment
        )
        if result.notice == "NO_SPEECH":
            raise ASRError("NO_SPEECH", "no speech was detected in the audio", 422)
        return result

    async def _transcribe(
        self,
        samples: FloatAudio,
        language: str | None,
        prompt: str | None,
        temperature: float,
        fmt: str,
        rate: int,
        channels: int,
        task: str = "transcribe",
        on_segment: Callable[[Segment], None] | None = None,
    ) -> FileTranscription:
        """The VAD skips the silence; Whisper decodes all the speech at once, in context (``layout.py``)."""
        cfg = self.config
        duration = len(samples) / SAMPLE_RATE
        lang = language or cfg.language
        regions = await asyncio.to_thread(
            self.vad.speech_regions,
            samples,
            threshold=cfg.vad_threshold,
            min_speech_ms=min(cfg.min_speech_ms, FILE_MIN_SPEECH_MS),
        )
        speech_s = sum(r.end - r.start for r in regions)
        self.observer.vad_frames(int(speech_s * 1000), max(1, int(duration * 1000)))
        if not regions:
            return FileTranscription(
                _silent(duration, lang), (), duration, fmt, rate, channels, notice="NO_SPEECH"
            )
        layout = SpeechLayout.of(regions, duration, max_gap_s=FILE_MAX_GAP_S)
        audio = layout.compact(samples)
        report = None
        if on_segment is not None:
            callback = on_segment

            def report(segment: Segment) -> None:
                callback(_restore_segment(segment, layout))

        def run() -> Recognition:
            return self.engine.recognize(
                audio,
                language=lang,
                prompt=prompt,
                temperature=TEMPERATURE_FALLBACK if temperature == 0.0 else temperature,
                word_timestamps=True,
                condition_on_previous_text=True,
                task=task,
                on_segment=report,
            )

        rec = _restore(await self.engine.run(run, PRIORITY_FINAL), layout)
        self.observer.decoded("final", rec)
        notice = None if rec.text else "NO_SPEECH"
        return FileTranscription(rec, tuple(regions), duration, fmt, rate, channels, notice=notice)


def _silent(duration: float, language: str | None) -> Recognition:
    return Recognition(
        text="",
        confidence=0.0,
        language=language,
        language_probability=1.0 if language else 0.0,
        segments=(),
        words=(),
        duration=duration,
        low_confidence=False,
    )


def _restore_segment(segment: Segment, layout: SpeechLayout) -> Segment:
    """``segment`` of the shortened clip with its times on the original's clock."""

    def word(w: Word) -> Word:
        return dataclasses.replace(w, start=layout.to_source(w.start), end=layout.to_source(w.end, end=True))

    return dataclasses.replace(
        segment,
        start=layout.to_source(segment.start),
        end=layout.to_source(segment.end, end=True),
        words=tuple(word(w) for w in segment.words),
    )


def _restore(rec: Recognition, layout: SpeechLayout) -> Recognition:
    """``rec`` of the shortened clip with its times on the original's clock."""
    segments = tuple(_restore_segment(s, layout) for s in rec.segments)
    return dataclasses.replace(
        rec, segments=segments, words=tuple(w for s in segments for w in s.words), duration=layout.duration
    )
