"""Voice pitch by varispeed (avatar_tts.pitch) on the real Piper voice: the pitch follows the
factor (measured with Praat through Parselmouth) while the duration stays what ``speed`` asks."""

from __future__ import annotations

import httpx
import numpy as np
import parselmouth
import pytest

from avatar_tts.errors import InvalidTextError
from avatar_tts.pitch import shift_pitch
from avatar_tts.service import TTSService

from .conftest import RunningServer

TEXT = "Wow, that is wonderful news. I am so happy for you today."


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    pitch = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=sample_rate).to_pitch()
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    assert voiced.size > 20
    return float(np.median(voiced))


def test_shift_pitch_resamples_by_the_factor() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    up = shift_pitch(tone, 1.25)
    assert up.dtype == np.float32 and len(up) == pytest.approx(sr / 1.25, abs=2)
    crossings = np.count_nonzero(np.diff(np.signbit(up)))
    assert crossings / 2 / (len(up) / sr) == pytest.approx(250, rel=0.02)
    assert shift_pitch(tone, 1.0) is tone


async def _lengths(
    tts_service: TTSService, runs: int = 3, *, speed: float = 1.0, pitch: float = 1.0
) -> tuple[list[int], np.ndarray, int]:
    """Sample counts of ``runs`` syntheses of TEXT (Piper's phoneme durations vary from run to run,
    so lengths are compared by their medians), the last audio, and the sample rate."""
    lengths = []
    audio = np.zeros(0, dtype=np.float32)
    rate = 0
    for _ in range(runs):
        utt = await tts_service.synthesize(TEXT, speed=speed, pitch=pitch)
        audio = await utt.read_all()
        rate = utt.sample_rate
        assert utt.engine == "piper"
        lengths.append(len(audio))
    return lengths, audio, rate


async def test_piper_pitch_rises_and_the_duration_follows_speed(tts_service: TTSService) -> None:
    plain_lengths, plain, rate = await _lengths(tts_service)
    high_lengths, high, _ = await _lengths(tts_service, pitch=1.2)
    fast_lengths, _, _ = await _lengths(tts_service, speed=1.25, pitch=0.9)
    plain_len = float(np.median(plain_lengths))
    assert float(np.median(high_lengths)) == pytest.approx(plain_len, rel=0.1)
    assert median_f0(high, rate) / median_f0(plain, rate) == pytest.approx(1.2, abs=0.07)
    assert float(np.median(fast_lengths)) == pytest.approx(plain_len / 1.25, rel=0.15)


async def test_a_pitch_out_of_range_is_refused(tts_service: TTSService) -> None:
    with pytest.raises(InvalidTextError, match=r"pitch must be within 0\.5\.\.2\.0") as info:
        await tts_service.synthesize("Hello.", pitch=3.0)
    assert info.value.code == "INVALID_PITCH"


def test_the_http_api_takes_a_pitch_and_refuses_a_bad_one(tts_server: RunningServer) -> None:
    with httpx.Client(base_url=tts_server.url, timeout=60) as http:
        ok = http.post(
            "/v1/audio/speech",
            json={"input": "Hello there.", "response_format": "pcm", "pitch": 1.15},
        )
        assert ok.status_code == 200 and len(ok.content) > 1000
        bad = http.post("/v1/audio/speech", json={"input": "Hello.", "pitch": 5})
        assert bad.status_code == 422 and "pitch" in bad.json()["error"]["message"]
