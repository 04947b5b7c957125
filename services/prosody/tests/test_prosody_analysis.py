"""Features on real speech, the scoring formula's direction on controlled signals, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from avatar_prosody.analyzer import analyze
from avatar_prosody.scoring import BASELINE_FEATURES, compute_scores
from avatar_prosody.synth import synthetic_voice
from tests.support.audio import SpeechClip

RATE = 16000


def _num(value: object) -> float:
    assert isinstance(value, float | int), value
    return float(value)


def test_real_speech_gives_plausible_features(librivox: list[SpeechClip]) -> None:
    for clip in librivox[:3]:
        result = analyze(clip.samples, clip.sample_rate)
        f = result.features
        assert result.reliable, (clip.name, result.reason)
        assert 60.0 <= _num(f["f0_mean_hz"]) <= 400.0
        assert 60.0 <= _num(f["f0_p5_hz"]) < _num(f["f0_p95_hz"]) <= 500.0
        assert 0.5 <= _num(f["f0_range_st"]) <= 24.0
        assert 0.0 < _num(f["jitter_local"]) < 0.1
        assert 0.0 < _num(f["shimmer_local"]) < 0.3
        assert 0.0 < _num(f["hnr_db"]) < 30.0
        assert 40.0 < _num(f["intensity_mean_db"]) < 90.0
        # Read English runs at 2-7 syllables per second.
        assert 2.0 <= _num(f["speech_rate_sps"]) <= 7.5
        assert 0.0 <= _num(f["pause_ratio"]) < 0.5
        egemaps = [k for k in f if k.startswith("egemaps.")]
        assert len(egemaps) == 88
        # openSMILE and Praat agree on pitch: eGeMAPS F0 is in semitones re 27.5 Hz.
        smile_f0_hz = 27.5 * 2 ** (_num(f["egemaps.F0semitoneFrom27.5Hz_sma3nz_amean"]) / 12)
        assert abs(12 * np.log2(smile_f0_hz / _num(f["f0_median_hz"]))) < 3.0
        for name in ("confidence", "stability", "affability"):
            assert 0.0 <= result.scores()[name] <= 100.0
            assert "z=" in result.explanation[name]


def test_steady_voice_is_more_stable_than_a_jittery_one() -> None:
    steady = analyze(synthetic_voice(3.0, seed=1), RATE)
    jittery = analyze(synthetic_voice(3.0, jitter=0.03, shimmer=0.15, seed=1), RATE)
    assert steady.reliable and jittery.reliable
    assert _num(steady.features["jitter_local"]) < _num(jittery.features["jitter_local"])
    assert steady.stability > jittery.stability + 20


def test_louder_wider_range_faster_voice_sounds_more_confident() -> None:
    bold = analyze(synthetic_voice(3.0, level_dbfs=-16, f0_range_st=9, syllable_rate=5), RATE)
    timid = analyze(synthetic_voice(3.0, level_dbfs=-32, f0_range_st=1, syllable_rate=3), RATE)
    assert bold.reliable and timid.reliable
    assert bold.confidence > timid.confidence + 20


def test_pauses_lower_confidence_and_are_measured() -> None:
    fluent = analyze(synthetic_voice(4.0), RATE)
    halting = analyze(synthetic_voice(4.0, pause_s=1.0), RATE)
    assert _num(halting.features["pause_count"]) >= 1
    assert 0.8 <= _num(halting.features["pause_total_s"]) <= 1.3
    assert _num(fluent.features["pause_count"]) == 0
    assert halting.confidence < fluent.confidence


def test_livelier_melody_is_more_affable() -> None:
    lively = analyze(synthetic_voice(3.0, f0_range_st=8), RATE)
    flat = analyze(synthetic_voice(3.0, f0_range_st=0.5), RATE)
    assert lively.affability > flat.affability + 10


def test_scores_are_relative_to_the_speakers_own_baseline() -> None:
    utterance = analyze(synthetic_voice(3.0, level_dbfs=-20, f0_hz=200), RATE)
    features = utterance.features
    # The same utterance is bold for a usually quiet speaker and timid for a usually loud one.
    intensity = _num(features["intensity_mean_db"])
    quiet_usual = {name: _num(features[name]) for name in BASELINE_FEATURES if features.get(name) is not None}
    loud_usual = dict(quiet_usual)
    quiet_usual["intensity_mean_db"] = intensity - 8
    loud_usual["intensity_mean_db"] = intensity + 8
    assert compute_scores(features, quiet_usual).confidence > compute_scores(features, loud_usual).confidence
    # Pitch above the speaker's own usual counts only against a baseline.
    same = compute_scores(features, quiet_usual)
    lower_usual = {**quiet_usual, "f0_mean_st": _num(features["f0_mean_st"]) - 3}
    assert compute_scores(features, lower_usual).affability > same.affability
    assert "n/a" in compute_scores(features).explanation["affability"]
    assert "own baseline" in same.explanation["confidence"]


def _noise(seconds: float, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(7).standard_normal(int(seconds * RATE))).astype(np.float32)


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        (synthetic_voice(0.3), "too_short"),
        (np.zeros(RATE * 2, dtype=np.float32), "silent"),
        (synthetic_voice(2.0, level_dbfs=-60, noise_dbfs=-90), "silent"),
        (np.clip(synthetic_voice(2.0, level_dbfs=-3) * 4.0, -1.0, 1.0), "clipped"),
        (_noise(2.0), "non_speech"),
        (
            np.frombuffer(np.random.default_rng(3).bytes(RATE * 4), dtype="<i2").astype(np.float32) / 32768,
            "non_speech",
        ),
    ],
    ids=["too_short", "digital_silence", "near_silence", "clipped", "white_noise", "garbage_pcm"],
)
def test_bad_audio_is_marked_unreliable_with_its_reason(samples: np.ndarray, reason: str) -> None:
    result = analyze(samples, RATE)
    assert not result.reliable
    assert result.reason == reason
    assert result.scores() == {"confidence": 50.0, "stability": 50.0, "affability": 50.0}
    assert reason in result.explanation["confidence"]


def test_a_pure_tone_is_not_taken_for_speech_syllables() -> None:
    t = np.arange(RATE * 2) / RATE
    hum = (0.2 * np.sin(2 * np.pi * 120 * t)).astype(np.float32)
    result = analyze(hum, RATE)
    # A steady hum has no syllable nuclei: voiced, but not speech.
    assert not result.reliable and result.reason == "non_speech"


def test_low_sample_rate_and_nan_are_refused() -> None:
    with pytest.raises(ValueError, match="too low"):
        analyze(synthetic_voice(1.0, sample_rate=8000)[:4000], 4000)
    bad = synthetic_voice(1.0)
    bad[10] = np.nan
    with pytest.raises(ValueError, match="invalid samples"):
        analyze(bad, RATE)


def test_high_rate_input_is_analyzed_like_16k(librivox: list[SpeechClip]) -> None:
    clip = librivox[0]
    buf = io.BytesIO()
    sf.write(buf, clip.samples, clip.sample_rate, format="WAV")
    import soxr

    upsampled = soxr.resample(clip.samples, clip.sample_rate, 48000).astype(np.float32)
    a, b = analyze(clip.samples, clip.sample_rate), analyze(upsampled, 48000)
    assert abs(_num(a.features["f0_median_hz"]) - _num(b.features["f0_median_hz"])) < 5.0
