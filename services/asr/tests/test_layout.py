"""The pure arithmetic behind context decoding: the shortened upload clip and the new words of a
final decoded behind its context. No model."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_asr.engine import Recognition, Segment, Word, since
from avatar_asr.layout import Span, SpeechLayout
from avatar_asr.vad import SpeechRegion


def test_short_pauses_and_edges_are_kept_so_the_clip_is_decoded_as_it_is() -> None:
    regions = [SpeechRegion(0.4, 3.0), SpeechRegion(3.8, 6.0), SpeechRegion(6.9, 9.2)]
    layout = SpeechLayout.of(regions, 10.0, max_gap_s=1.0)
    assert layout.spans == (Span(0.0, 10.0, 0.0),)
    samples = np.arange(160000, dtype=np.float32)
    assert np.array_equal(layout.compact(samples), samples)
    assert layout.to_source(4.25) == 4.25


def test_long_silences_shrink_to_the_regions_padding_and_times_map_back() -> None:
    regions = [SpeechRegion(5.0, 7.0), SpeechRegion(20.0, 21.5), SpeechRegion(22.0, 23.0)]
    layout = SpeechLayout.of(regions, 40.0, max_gap_s=1.0)
    assert layout.spans == (Span(5.0, 7.0, 0.0), Span(20.0, 23.0, 2.0))
    assert layout.length == pytest.approx(5.0)
    samples = np.arange(40 * 16000, dtype=np.float32)
    compact = layout.compact(samples)
    assert len(compact) == 5 * 16000
    assert compact[0] == 5 * 16000 and compact[2 * 16000] == 20 * 16000
    assert layout.to_source(0.5) == 5.5
    assert layout.to_source(2.5) == 20.5
    # On the seam: an end belongs to the first span, a start to the second.
    assert layout.to_source(2.0, end=True) == 7.0
    assert layout.to_source(2.0) == 20.0
    assert layout.to_source(99.0, end=True) == 23.0


def test_no_regions_no_spans() -> None:
    layout = SpeechLayout.of([], 3.0)
    assert layout.spans == () and layout.length == 0.0
    assert len(layout.compact(np.zeros(48000, np.float32))) == 0


def _word(text: str, start: float, end: float, spaced: bool = True) -> Word:
    return Word(text, start, end, 0.9, spaced)


def _decode() -> Recognition:
    """What a decode of "[context] He was not. [pause] An ill-disposed young man." looks like."""
    first = (_word("He", 0.2, 0.4), _word("was", 0.4, 0.6), _word("not.", 0.6, 0.9))
    second = (
        _word("An", 1.9, 2.0),
        _word("ill", 2.0, 2.2),
        _word("-disposed", 2.2, 2.7, spaced=False),
        _word("young", 2.7, 3.0),
        _word("man.", 3.0, 3.3),
    )
    across = Segment("He was not. An ill-disposed", 0.2, 2.7, -0.2, 0.01, first + second[:3])
    rest = Segment("young man.", 2.7, 3.3, -0.4, 0.01, second[3:])
    return Recognition(
        text="He was not. An ill-disposed young man.",
        confidence=0.8,
        language="en",
        language_probability=1.0,
        segments=(across, rest),
        words=first + second,
        duration=3.5,
        low_confidence=False,
    )


def test_since_keeps_the_words_after_the_pause_on_the_new_utterances_clock() -> None:
    new = since(_decode(), boundary=1.3, origin=1.5, duration=2.0, threshold=0.45)
    assert new.text == "An ill-disposed young man."
    assert [w.word for w in new.words] == ["An", "ill", "-disposed", "young", "man."]
    assert new.words[0].start == pytest.approx(0.4) and new.words[-1].end == pytest.approx(1.8)
    assert [s.text for s in new.segments] == ["An ill-disposed", "young man."]
    assert new.segments[0].start == pytest.approx(0.4)
    assert new.duration == 2.0 and new.language == "en"
    # Confidence from the kept words only: 3 words at -0.2, 2 at -0.4.
    assert new.confidence == pytest.approx(np.exp((3 * -0.2 + 2 * -0.4) / 5))
    assert not new.low_confidence


def test_since_with_nothing_after_the_boundary_is_empty() -> None:
    new = since(_decode(), boundary=3.4, origin=3.4, duration=0.1, threshold=0.45)
    assert new.text == "" and new.segments == () and new.words == () and new.confidence == 0.0
    assert not new.low_confidence
