"""Service configuration: plain data, no I/O (the backend maps its ``Settings.asr`` onto this)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Whisper always works at 16 kHz; every stream and upload is resampled to this rate.
SAMPLE_RATE = 16000


@dataclass(frozen=True, slots=True)
class ASRConfig:
    """Everything the engine, the streams and the app need.

    Attributes:
        model: A directory with a CTranslate2 Whisper model, or a size name (``large-v3-turbo``) that
            faster-whisper resolves itself (production, where model downloads are allowed).
        vad_model: Path of the Silero VAD ONNX file (``silero_vad.onnx`` of the ``silero-vad`` package).
        device: ``cpu``, ``cuda`` or ``auto``.
        compute_type: CTranslate2 compute type (``int8`` on CPU, ``float16`` on GPU).
        cpu_threads: Threads one Whisper call may use.
        workers: Whisper calls that may run at once (each shares the one loaded model).
        language: Fixed language for every stream unless the stream names one; ``None`` auto-detects.
        beam_size: Decoder beam size (1 = greedy, lowest latency).
        vad_threshold: Speech probability above which a 32 ms frame counts as speech.
        min_silence_ms: Silence after speech that ends an utterance (the endpoint).
        min_speech_ms: Speech needed before an utterance counts (shorter blips are ignored).
        max_utterance_s: An utterance longer than this is finalized and a new one begins.
        partial_interval_ms: Least new audio between two partial decodes of one stream.
        speculative_silence_ms: Silence after which the final decode starts speculatively (two VAD
            frames; the missing tail is decoded as silence: docs/adr/0014-voice-latency.md, seventh round).
        complete_silence_ms: Silence that ends an utterance whose speculative transcript reads as a
            finished turn (the turn detector, ``endpointing.looks_complete``); 0 turns it off.
        speculative_quiet_ms: Quiet after the last loud speech frame (the VAD still calling it
            speech, its loudness a tenth of the utterance's loudest) after which the final decode
            starts speculatively, before the VAD's silence (``endpointing``, the quiet rule; 0 turns it off).
        max_queue: Whisper jobs that may wait or run at once; beyond it callers get ``BUSY`` at once.
        queue_timeout_s: Longest a final decode waits for its turn (served round-robin between
            streams); past it the utterance fails ``BUSY``.
        partial_wait_s: Longest a partial decode waits; partials are shed first under load.
        low_confidence_threshold: Results below this confidence are flagged ``low_confidence``.
        max_audio_s: Longest upload accepted by the transcription endpoint.
        max_upload_bytes: Largest upload accepted by the transcription endpoint.
        max_chunk_s: Longest single chunk a stream accepts.
        max_streams: Streams that may be open at once.
        window_pad_s: Audio of at most 30 s is encoded in a window this much longer than the audio
            (rounded up to a whole second, at least ``min_window_s``) instead of Whisper's fixed 30 s
            window, which costs ~3x less on a small CPU (docs/adr/0014-voice-latency.md); 0 keeps
            the fixed 30 s window.
        min_window_s: The shortest encoder window (short audio is padded to this).
        short_window_from_s: Audio shorter than this keeps the fixed 30 s window (on ~1 s of
            speech the short window loses the first word).
        context_gap_s: A stream's final is decoded in the context of earlier finals that ended at
            most this long before it (each before the next); see ``services/asr/README.md``.
        context_audio_s: At most this much of their audio is decoded again with it (0: only their
            text, as the prompt); it costs decode time, about 1 s more per final on a small CPU.
    """

    model: str
    vad_model: Path
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    workers: int = 1
    language: str | None = None
    beam_size: int = 1
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    min_speech_ms: int = 250
    max_utterance_s: float = 20.0
    partial_interval_ms: int = 700
    speculative_silence_ms: int = 64
    complete_silence_ms: int = 300
    speculative_quiet_ms: int = 96
    max_queue: int = 32
    queue_timeout_s: float = 20.0
    partial_wait_s: float = 1.0
    low_confidence_threshold: float = 0.45
    max_audio_s: float = 900.0
    max_upload_bytes: int = 64 * 1024 * 1024
    max_chunk_s: float = 30.0
    max_streams: int = 16
    context_gap_s: float = 3.0
    context_audio_s: float = 20.0
    model_name: str = "whisper-base"
    window_pad_s: float = 4.0
    min_window_s: float = 10.0
    short_window_from_s: float = 1.5
