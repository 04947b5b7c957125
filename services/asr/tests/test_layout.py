"""The pure parts of decoding in context: the shortened upload clip, a stream's tape and history of
finals, and the new words of a final decoded behind its context. No model."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import pytest

from avatar_asr.context import MAX_DECODE_S, AudioContext, AudioTape, FinalHistory, PastFinal
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


def _final(start_s: float, end_s: float, text: str | None, speech_end_s: float | None = None) -> PastFinal:
    """A past final with its decode done (``text``) or still running (None)."""
    decode: concurrent.futures.Future[Recognition] = concurrent.futures.Future()
    if text is not None:
        decode.set_result(dataclasses.replace(_decode(), text=text))
    at = round(16000 * (end_s - 0.2 if speech_end_s is None else speech_end_s))
    return PastFinal(round(16000 * start_s), round(16000 * end_s), at, decode)


def test_the_prompt_is_the_chain_of_finals_just_before() -> None:
    history = FinalHistory()
    history.add(_final(0.0, 2.0, "Long ago."))  # 5 s before the next: not part of the thought
    history.add(_final(7.0, 9.0, "And Mr. John Dashwood had then"))
    history.add(_final(10.0, 12.0, "leisure to consider how much"))
    assert history.prompt(13 * 16000) == "And Mr. John Dashwood had then leisure to consider how much"
    assert history.prompt(20 * 16000) == ""  # 8 s after the last: a new thought
    history.add(_final(13.0, 14.0, None))  # still decoding: nothing before it is used either
    assert history.prompt(15 * 16000) == ""


def test_the_audio_context_reaches_back_over_short_pauses_only() -> None:
    history = FinalHistory()
    history.add(_final(1.0, 4.0, "a", speech_end_s=3.8))
    history.add(_final(5.0, 8.0, "b", speech_end_s=7.8))
    boundary = round((7.8 + 9.0) / 2 * 16000)
    assert history.audio_context(9 * 16000, 11 * 16000, available_from=0) == AudioContext(16000, boundary)
    # Only what the tape still holds, and the whole decode within one Whisper window.
    assert history.audio_context(9 * 16000, 11 * 16000, available_from=3 * 16000) == AudioContext(
        5 * 16000, boundary
    )
    assert MAX_DECODE_S == 28.0 and history.audio_s == 20.0
    assert history.audio_context(9 * 16000, 31 * 16000, available_from=0) == AudioContext(5 * 16000, boundary)
    assert history.audio_context(9 * 16000, 35 * 16000, available_from=0) is None
    history.add(_final(9.0, 19.5, "c", speech_end_s=19.5))
    # Cut at the length limit (no pause since the last speech): text only, no audio context.
    assert history.audio_context(int(19.5 * 16000), 22 * 16000, available_from=0) is None
    # Long after: none.
    assert history.audio_context(30 * 16000, 32 * 16000, available_from=0) is None
    text_only = FinalHistory(audio_s=0.0)
    text_only.add(_final(1.0, 4.0, "a", speech_end_s=3.8))
    assert text_only.audio_context(5 * 16000, 7 * 16000, available_from=0) is None
    assert text_only.prompt(5 * 16000) == "a"


def test_the_tape_slices_by_absolute_position_after_trimming() -> None:
    tape = AudioTape()
    for i in range(5):
        tape.append(np.full(1000, i, np.float32))
    tape.trim(2500)  # whole chunks only: the third chunk (2000-3000) stays
    assert tape.start == 2000 and tape.end == 5000
    assert list(tape.slice(2900, 3100)) == [2.0] * 100 + [3.0] * 100
    assert len(tape.slice(0, 2100)) == 100  # clipped to what is held
    assert len(tape.slice(6000, 7000)) == 0
