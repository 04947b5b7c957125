"""ASR metrics: confidence distribution per result kind and the VAD's speech/non-speech frame counts
(the Speech dashboard's panels, checked end to end by tests/deploy/test_dashboard_series.py)."""

from __future__ import annotations

from avatar_asr.engine import Recognition
from avatar_asr.metrics import ASRMetrics


def _recognition(text: str, confidence: float, low: bool = False) -> Recognition:
    return Recognition(
        text=text,
        confidence=confidence,
        language="en",
        language_probability=1.0,
        segments=(),
        words=(),
        duration=2.0,
        low_confidence=low,
        decode_s=0.4,
    )


def test_confidence_is_observed_per_kind_for_results_with_text() -> None:
    metrics = ASRMetrics()
    metrics.decoded("final", _recognition("hello there", 0.92))
    metrics.decoded("final", _recognition("mumble", 0.3, low=True))
    metrics.decoded("partial", _recognition("hel", 0.55))
    metrics.decoded("final", _recognition("", 0.0))  # silence: nothing was recognized
    sample = metrics.registry.get_sample_value
    assert sample("asr_confidence_count", {"kind": "final"}) == 2.0
    assert sample("asr_confidence_sum", {"kind": "final"}) == 0.92 + 0.3
    assert sample("asr_confidence_bucket", {"kind": "final", "le": "0.3"}) == 1.0
    assert sample("asr_confidence_count", {"kind": "partial"}) == 1.0
    assert sample("asr_low_confidence_results_total") == 1.0
    assert sample("asr_rtf_count", {"kind": "final"}) == 3.0


def test_vad_frames_feed_the_speech_ratio() -> None:
    metrics = ASRMetrics()
    metrics.vad_frames(30, 100)
    metrics.vad_frames(10, 100)
    sample = metrics.registry.get_sample_value
    assert sample("asr_vad_frames_total", {"speech": "yes"}) == 40.0
    assert sample("asr_vad_frames_total", {"speech": "no"}) == 160.0
    assert sample("asr_vad_speech_ratio") == 0.2
