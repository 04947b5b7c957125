"""Whisper's silence/noise fantasies are recognized; real speech is kept."""

from __future__ import annotations

import pytest

from avatar_asr.engine import is_low_confidence
from avatar_asr.hallucination import SegmentEvidence, is_hallucination


def seg(text: str, no_speech: float = 0.1, logprob: float = -0.3) -> SegmentEvidence:
    return SegmentEvidence(text, no_speech, logprob)


@pytest.mark.parametrize(
    "text",
    [
        "시청해주셔서 감사합니다.",
        "구독과 좋아요 부탁드립니다!",
        "Thanks for watching!",
        "Thank you for watching.",
        "Subtitles by the Amara.org community",
        "字幕由Amara.org社区提供",
        "ご視聴ありがとうございました",
        "",
        "   ",
        "the the the the the the the the the the",
    ],
)
def test_known_hallucinations_are_dropped(text: str) -> None:
    assert is_hallucination(seg(text))


@pytest.mark.parametrize(
    "text",
    [
        "He was not an ill disposed young man.",
        "Thanks for watching the kids yesterday, it helped a lot.",
        "감사합니다 정말 도움이 됐어요",
        "I think subtitles are useful.",
    ],
)
def test_real_speech_is_kept(text: str) -> None:
    assert not is_hallucination(seg(text))


def test_ambiguous_phrases_depend_on_the_decoders_doubt() -> None:
    assert not is_hallucination(seg("Thank you.", no_speech=0.05, logprob=-0.2))
    assert is_hallucination(seg("Thank you.", no_speech=0.8, logprob=-0.2))
    assert is_hallucination(seg("감사합니다.", no_speech=0.1, logprob=-1.4))


def test_low_confidence_is_flagged_not_dropped() -> None:
    assert is_low_confidence("maybe this", 0.30, 0.45)
    assert not is_low_confidence("surely this", 0.80, 0.45)
    assert not is_low_confidence("", 0.10, 0.45)  # nothing to flag
