"""Audio I/O on real encodings produced by FFmpeg and libsndfile."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avatar_common.audio import (
    AudioDecodeError,
    clipping_ratio,
    decode_audio,
    encode_audio,
    float_to_pcm16,
    pcm16_to_float,
    resample,
    rms_dbfs,
)


def _tone(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _ffmpeg_encode(wav: bytes, ext: str, tmp: Path) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is not installed: run `make setup`")
    src, dst = tmp / "in.wav", tmp / f"out.{ext}"
    src.write_bytes(wav)
    codec = {
        "mp3": ["-c:a", "libmp3lame"],
        "ogg": ["-c:a", "libvorbis"],
        "opus": ["-c:a", "libopus"],
        "webm": ["-c:a", "libopus"],
        "flac": [],
    }[ext]
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(src), *codec, str(dst)], check=True)
    return dst.read_bytes()


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "opus", "webm"])
def test_decodes_every_supported_container(ext: str, tmp_path: Path) -> None:
    wav = encode_audio(_tone(1.0, 16000), 16000, "wav")
    decoded = decode_audio(_ffmpeg_encode(wav, ext, tmp_path))
    assert decoded.duration_s == pytest.approx(1.0, abs=0.08)
    # The dominant frequency survives the codec.
    spectrum = np.abs(np.fft.rfft(decoded.samples[: decoded.sample_rate]))
    peak = np.argmax(spectrum) * decoded.sample_rate / (2 * (len(spectrum) - 1))
    assert peak == pytest.approx(440, abs=5)


def test_stereo_is_mixed_to_mono() -> None:
    left = _tone(0.5)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, np.zeros_like(left)], axis=1), 16000, format="WAV")
    decoded = decode_audio(buf.getvalue())
    assert decoded.source_channels == 2 and decoded.samples.ndim == 1
    assert np.max(np.abs(decoded.samples)) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not audio at all" * 50, "undecodable"),
        (bytes(range(256)) * 40, "undecodable"),
    ],
)
def test_bad_bytes_raise_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(data)
    assert info.value.reason == reason


def test_truncated_file_keeps_the_decodable_part(tmp_path: Path) -> None:
    mp3 = _ffmpeg_encode(encode_audio(_tone(2.0), 16000, "wav"), "mp3", tmp_path)
    decoded = decode_audio(mp3[: len(mp3) // 2])
    assert 0.5 < decoded.duration_s < 1.6


def test_too_long_is_refused() -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(encode_audio(_tone(3.0), 16000, "wav"), max_seconds=2.0)
    assert info.value.reason == "too_long"


def test_resample_keeps_pitch_and_duration() -> None:
    x = _tone(1.0, 44100, 1000.0)
    y = resample(x, 44100, 16000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_pcm16_round_trip_and_odd_length() -> None:
    x = _tone(0.1)
    assert np.allclose(pcm16_to_float(float_to_pcm16(x)), x, atol=1e-4)
    with pytest.raises(ValueError):
        pcm16_to_float(b"\x00\x01\x02")


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac", "mp3", "opus"])
def test_encode_every_output_format_decodes_back(fmt: str) -> None:
    data = encode_audio(_tone(1.0, 22050), 22050, fmt)
    if fmt == "pcm":
        assert len(data) == 2 * 22050
        return
    decoded = decode_audio(data)
    assert decoded.duration_s == pytest.approx(1.0, abs=0.1)


def test_encode_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_audio(_tone(0.1), 16000, "wma")


def test_levels() -> None:
    assert rms_dbfs(np.zeros(100, dtype=np.float32)) == float("-inf")
    assert rms_dbfs(_tone(0.5)) == pytest.approx(-9.03, abs=0.1)
    clipped = np.clip(_tone(0.5) * 4, -1, 1)
    assert clipping_ratio(clipped) > 0.3 and clipping_ratio(_tone(0.5)) == 0.0
