"""Audio I/O shared by every service: decode any upload, resample, convert, encode.

Decoding uses libsndfile (WAV/FLAC/OGG) through ``soundfile`` first and FFmpeg through PyAV for the
rest (MP3, Opus, WebM, ...). Resampling uses libsoxr (``soxr``), a real band-limited resampler.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

FloatAudio = npt.NDArray[np.float32]

#: Containers and codecs accepted by :func:`decode_audio`.
SUPPORTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "webm")


class AudioDecodeError(ValueError):
    """The bytes are not decodable audio; ``reason`` is a short machine-readable cause."""

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] with their rate and what the source was."""

    samples: FloatAudio
    sample_rate: int
    source_channels: int
    source_format: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate) if self.sample_rate else 0.0


def _to_mono(data: npt.NDArray[np.float32]) -> FloatAudio:
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    return np.asarray(data.mean(axis=1), dtype=np.float32)


def _decode_soundfile(data: bytes) -> DecodedAudio | None:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            frames = f.read(dtype="float32", always_2d=True)
            fmt = str(f.format).lower()
            return DecodedAudio(_to_mono(frames), int(f.samplerate), int(f.channels), fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


def _decode_pyav(data: bytes, max_seconds: float | None) -> DecodedAudio:
    import av  # local: FFmpeg bindings are only needed for compressed formats

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise AudioDecodeError(f"not a decodable audio file: {exc}", "undecodable") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream", "no_audio_stream")
        try:
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            channels = int(stream.codec_context.channels or 1)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate or None)
        except (AttributeError, TypeError, ValueError, av.error.FFmpegError) as exc:
            # A header FFmpeg half-understood (0 bits per sample, an unknown format tag ...).
            raise AudioDecodeError(f"the audio stream cannot be decoded: {exc}", "undecodable") from exc
        parts: list[FloatAudio] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1).astype(np.float32)
                    parts.append(arr)
                    total += len(arr)
                if max_seconds is not None and rate and total > max_seconds * rate:
                    raise AudioDecodeError(f"audio is longer than the {max_seconds:.0f} s limit", "too_long")
        except (av.error.FFmpegError, ValueError) as exc:
            if not parts:
                raise AudioDecodeError(f"corrupt or truncated audio: {exc}", "corrupt") from exc
            # A truncated tail still yields the decodable part, as players do.
        fmt = str(container.format.name).split(",")[0]
    if not parts or not rate:
        raise AudioDecodeError("the file contains no audio samples", "empty")
    return DecodedAudio(np.concatenate(parts), rate, channels, fmt)


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> DecodedAudio:
    """Decode a whole audio file (any supported container) to mono float32.

    Raises:
        AudioDecodeError: empty input, garbage bytes, no audio stream, or longer than ``max_seconds``.
    """
    if not data:
        raise AudioDecodeError("the audio file is empty", "empty")
    decoded = _decode_soundfile(data)
    if decoded is None:
        decoded = _decode_pyav(data, max_seconds)
    if decoded.samples.size == 0:
        raise AudioDecodeError("the file contains no audio samples", "empty")
    if max_seconds is not None and decoded.duration_s > max_seconds:
        raise AudioDecodeError(f"audio is longer than the {max_seconds:.0f} s limit", "too_long")
    if not np.all(np.isfinite(decoded.samples)):
        raise AudioDecodeError("the audio contains invalid samples", "corrupt")
    return decoded


def resample(samples: FloatAudio, from_rate: int, to_rate: int) -> FloatAudio:
    """Band-limited resampling (libsoxr, high quality)."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def pcm16_to_float(pcm: bytes) -> FloatAudio:
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: FloatAudio) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def encode_wav(samples: FloatAudio, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pcm16_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    return encode_wav(pcm16_to_float(pcm), sample_rate)


def encode_audio(samples: FloatAudio, sample_rate: int, fmt: str, *, bit_rate: int | None = None) -> bytes:
    """Encode mono float32 samples as ``wav``, ``pcm`` (raw s16le), ``flac``, ``mp3`` or ``opus`` (Ogg).

    ``bit_rate`` (bit/s) applies to the compressed formats (the codec's default when omitted).

    Raises:
        ValueError: for an unknown format.
    """
    fmt = fmt.lower()
    if fmt == "wav":
        return encode_wav(samples, sample_rate)
    if fmt == "pcm":
        return float_to_pcm16(samples)
    if fmt == "flac":
        buf = io.BytesIO()
        sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    if fmt in ("mp3", "opus", "aac"):
        return _encode_pyav(samples, sample_rate, fmt, bit_rate)
    raise ValueError(f"unsupported output format {fmt!r}")


def _encode_pyav(samples: FloatAudio, sample_rate: int, fmt: str, bit_rate: int | None = None) -> bytes:
    import av

    codec, container_fmt, rate = {
        "mp3": ("libmp3lame", "mp3", sample_rate),
        "opus": ("libopus", "ogg", 48000),
        "aac": ("aac", "adts", sample_rate),
    }[fmt]
    data = resample(samples, sample_rate, rate)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise ValueError(f"{codec} is not an audio codec")
        stream.layout = "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        frame_size = 960 if fmt == "opus" else 1152
        pcm = float_to_pcm16(data)
        arr = np.frombuffer(pcm, dtype="<i2")
        for start in range(0, len(arr), frame_size):
            block = arr[start : start + frame_size].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def last_speech_ms(pcm: bytes, sample_rate: int = 16000, frame_ms: int = 10) -> float:
    """Where the speech in PCM16 mono ``pcm`` ends, in ms from its start: the end of its last
    ``frame_ms`` frame louder than a tenth of the loudest frame's RMS (and than a floor of 100 /
    32768). The VAD decides later than this and the recognizer is given a tail of silence; this
    is the moment a listener hears the person stop (docs/adr/0014-voice-latency.md)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    n = max(1, sample_rate * frame_ms // 1000)
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    if not len(frames):
        return 0.0
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > max(0.1 * float(rms.max()), 100.0))[0]
    return float((loud[-1] + 1) * frame_ms) if len(loud) else 0.0


def rms_dbfs(samples: FloatAudio) -> float:
    """Loudness in dB relative to full scale; ``-inf`` for digital silence."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def clipping_ratio(samples: FloatAudio, threshold: float = 0.999) -> float:
    """Fraction of samples at or beyond full scale."""
    if samples.size == 0:
        return 0.0
    return float(np.mean(np.abs(samples) >= threshold))
