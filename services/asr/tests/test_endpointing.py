"""The endpointing state machine on synthetic VAD sequences: no audio, no Whisper, milliseconds."""

from __future__ import annotations

import math

import pytest

from avatar_asr.endpointing import (
    QUIET_SPAN_MS,
    CancelReason,
    Decision,
    Endpoint,
    Endpointer,
    EndpointingConfig,
    EndReason,
    NoSpeech,
    PartialDue,
    SpeculationCancelled,
    SpeculationStarted,
    SpeechStarted,
    UtteranceClosed,
    UtteranceOpened,
    looks_complete,
)

CFG = EndpointingConfig()  # the service's defaults: 0.5, 250 / 500 / 160 / 700 ms, 20 s, 32 ms frames
FRAME = CFG.frame_samples
TAIL_PAD = int(CFG.tail_pad_ms * CFG.sample_rate / 1000)


#: A speculation cancelled by speech resuming, a second one, and the endpoint that uses it (partials aside).
RESUMED_THEN_ENDED = [
    UtteranceOpened,
    SpeechStarted,
    SpeculationStarted,
    SpeculationCancelled,
    SpeculationStarted,
    Endpoint,
    UtteranceClosed,
]


def frames(ms: float, p: float) -> list[float]:
    """``ms`` of frames with speech probability ``p``."""
    return [p] * math.ceil(ms / CFG.frame_ms)


def feed(ep: Endpointer, *parts: list[float]) -> list[tuple[int, Decision]]:
    """Every decision with the frame index (from 0) of the frame that caused it."""
    out: list[tuple[int, Decision]] = []
    for p in (p for part in parts for p in part):
        decisions = ep.feed(p)
        out.extend((ep.position // FRAME - 1, d) for d in decisions)
    return out


def of(decisions: list[tuple[int, Decision]], kind: type) -> list[tuple[int, Decision]]:
    return [(i, d) for i, d in decisions if isinstance(d, kind)]


def test_silence_decides_nothing_and_a_flush_reports_no_speech() -> None:
    ep = Endpointer(CFG)
    assert feed(ep, frames(3000, 0.02), frames(1000, 0.45)) == []
    assert ep.flush() == [NoSpeech()]
    assert not ep.in_utterance


def test_one_utterance_from_onset_to_endpoint() -> None:
    ep = Endpointer(CFG)
    got = feed(ep, frames(1024, 0.0), frames(1600, 0.9), frames(800, 0.05))
    speech_from = 32  # first speech frame (1024 ms of silence = 32 frames)
    speech_to = speech_from + 50  # 1600 ms of speech
    opened = of(got, UtteranceOpened)
    assert opened == [(speech_from, UtteranceOpened((speech_from + 1 - 9) * FRAME))]  # 9 frames pre-roll
    start = (speech_from + 1 - 9) * FRAME
    (started,) = of(got, SpeechStarted)
    assert started[0] == speech_from + 7  # 8 speech frames = 256 ms >= 250 ms
    assert started[1] == SpeechStarted(start, (speech_from + 8) * FRAME)
    partials = [d for _i, d in of(got, PartialDue)]
    assert partials and all(isinstance(d, PartialDue) and d.start == start for d in partials)
    (spec,) = of(got, SpeculationStarted)
    assert spec[0] == speech_to + 4  # 5 silent frames = 160 ms
    speech_end = (speech_to) * FRAME
    # The speculation decodes what is there so far: 160 ms of the 200 ms tail.
    assert spec[1] == SpeculationStarted(start, (spec[0] + 1) * FRAME, speech_end)
    endpoint_at = speech_to + 15  # 16 silent frames = 512 ms >= 500 ms
    assert [d for i, d in got if i == endpoint_at] == [
        Endpoint(start, speech_end + TAIL_PAD, speech_end, EndReason.SILENCE, use_speculation=True),
        UtteranceClosed(),
    ]
    assert not of(got, SpeculationCancelled)
    assert not ep.in_utterance
    assert ep.flush() == []  # something was said since the last flush, and it is already final


def test_a_blip_shorter_than_min_speech_is_dropped_without_an_endpoint() -> None:
    ep = Endpointer(CFG)
    got = feed(ep, frames(500, 0.0), frames(160, 0.9), frames(600, 0.0))
    assert [type(d) for _i, d in got] == [UtteranceOpened, UtteranceClosed]
    assert ep.flush() == [NoSpeech()]


def test_hysteresis_keeps_an_utterance_open_but_does_not_open_one() -> None:
    ep = Endpointer(CFG)
    assert feed(ep, frames(1000, 0.4)) == []  # under the threshold: not speech when idle
    got = feed(ep, frames(300, 0.9), frames(2000, 0.4), frames(600, 0.0))
    (endpoint,) = [d for _i, d in of(got, Endpoint)]
    assert isinstance(endpoint, Endpoint)
    # 0.4 >= 0.5 - 0.15: still speech inside the utterance, so it runs to the end of the 0.4 frames.
    assert endpoint.speech_end == ep.position - math.ceil(600 / CFG.frame_ms) * FRAME


def test_speech_resuming_cancels_the_speculation_and_one_final_covers_both_parts() -> None:
    ep = Endpointer(CFG)
    got = feed(ep, frames(1000, 0.9), frames(300, 0.0), frames(1000, 0.9), frames(700, 0.0))
    assert [type(d) for _i, d in got if not isinstance(d, PartialDue)] == RESUMED_THEN_ENDED
    (cancel,) = [d for _i, d in of(got, SpeculationCancelled)]
    assert cancel == SpeculationCancelled(CancelReason.SPEECH_RESUMED)
    (endpoint,) = [d for _i, d in of(got, Endpoint)]
    assert isinstance(endpoint, Endpoint) and endpoint.start == 0 and endpoint.use_speculation
    second_spec = [d for _i, d in of(got, SpeculationStarted)][1]
    assert isinstance(second_spec, SpeculationStarted) and second_spec.speech_end == endpoint.speech_end


def test_a_refused_speculation_is_tried_again_on_the_next_silent_frame() -> None:
    ep = Endpointer(CFG)
    got = feed(ep, frames(1000, 0.9), frames(160, 0.0))
    assert of(got, SpeculationStarted)
    ep.speculation_refused()
    retry = ep.feed(0.0)
    assert len(retry) == 1 and isinstance(retry[0], SpeculationStarted)
    assert ep.feed(0.0) == []  # one running: no second


def test_the_endpoint_decodes_afresh_when_every_speculation_was_refused() -> None:
    ep = Endpointer(CFG)
    feed(ep, frames(1000, 0.9))
    endpoints = []
    for p in frames(600, 0.0):
        for decision in ep.feed(p):
            if isinstance(decision, SpeculationStarted):
                ep.speculation_refused()  # the queue is full every time
            if isinstance(decision, Endpoint):
                endpoints.append(decision)
    assert len(endpoints) == 1 and not endpoints[0].use_speculation


def test_partials_are_paced_and_never_two_at_a_time() -> None:
    ep = Endpointer(CFG)
    got = feed(ep, frames(2000, 0.9))
    (first,) = of(got, PartialDue)  # the first is still being decoded: no second one
    interval = CFG.partial_interval_ms * CFG.sample_rate / 1000
    assert first[1] == PartialDue(0, math.ceil(interval / FRAME) * FRAME)
    ep.partial_finished()
    assert [type(d) for d in ep.feed(0.9)] == [PartialDue]  # plenty of new audio since the first
    ep.partial_finished()
    assert of(feed(ep, frames(600, 0.9)), PartialDue) == []  # less than 700 ms since the last one
    assert len(of(feed(ep, frames(200, 0.9)), PartialDue)) == 1


def test_no_partial_while_silent() -> None:
    ep = Endpointer(CFG)
    feed(ep, frames(300, 0.9))
    got = feed(ep, frames(150, 0.0))  # silence shorter than the speculation delay
    assert of(got, PartialDue) == []


def test_long_speech_is_cut_into_utterances_that_tile_the_audio() -> None:
    cfg = EndpointingConfig(max_utterance_s=2.0)
    ep = Endpointer(cfg)
    got = feed(ep, frames(500, 0.0), frames(7000, 0.9), frames(700, 0.0))
    endpoints = [d for _i, d in of(got, Endpoint)]
    assert [e.reason for e in endpoints if isinstance(e, Endpoint)] == [
        EndReason.MAX_LENGTH,
        EndReason.MAX_LENGTH,
        EndReason.MAX_LENGTH,
        EndReason.SILENCE,
    ]
    opened = [d.start for _i, d in of(got, UtteranceOpened) if isinstance(d, UtteranceOpened)]
    for i, endpoint in enumerate(endpoints):
        assert isinstance(endpoint, Endpoint)
        assert endpoint.start == opened[i]
        assert endpoint.end - endpoint.start <= 2.0 * cfg.sample_rate + FRAME
        if i:
            # The next utterance begins where the previous one was cut: no audio from before the
            # previous utterance is taken as its pre-roll, and none of it is decoded twice.
            previous = endpoints[i - 1]
            assert isinstance(previous, Endpoint) and endpoint.start == previous.end


def test_flush_finalizes_the_utterance_in_progress() -> None:
    ep = Endpointer(CFG)
    feed(ep, frames(600, 0.9))
    assert ep.in_utterance
    decisions = ep.flush()
    assert [type(d) for d in decisions] == [Endpoint, UtteranceClosed]
    endpoint = decisions[0]
    assert isinstance(endpoint, Endpoint) and endpoint.reason is EndReason.FLUSH
    assert endpoint.end == ep.position and not endpoint.use_speculation
    assert ep.flush() == [NoSpeech()]  # released again with nothing said


def test_flush_with_only_a_blip_reports_no_speech_and_drops_it() -> None:
    ep = Endpointer(CFG)
    feed(ep, frames(100, 0.9))
    assert ep.flush() == [NoSpeech(), UtteranceClosed()]
    assert not ep.in_utterance


def test_pre_roll_never_reaches_before_the_stream_or_the_previous_utterance() -> None:
    ep = Endpointer(CFG)
    (opened,) = [d for _i, d in feed(ep, [0.9]) if isinstance(d, UtteranceOpened)]
    assert opened.start == 0
    got = feed(ep, frames(600, 0.9), frames(600, 0.0))
    ((closed_frame, _closed),) = of(got, UtteranceClosed)
    closed_at = (closed_frame + 1) * FRAME
    got = feed(ep, frames(64, 0.0), [0.9])
    (reopened,) = [d for _i, d in got if isinstance(d, UtteranceOpened)]
    assert reopened.start == closed_at  # fewer idle frames since the close than the 300 ms pre-roll
    assert ep.retain_from == reopened.start


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_the_threshold_is_respected(threshold: float) -> None:
    ep = Endpointer(EndpointingConfig(threshold=threshold))
    assert feed(ep, frames(500, threshold - 0.01)) == []
    assert isinstance(ep.feed(threshold)[0], UtteranceOpened)


# --- the turn detector (docs/adr/0014-voice-latency.md) ------------------------------------------

DETECTOR = EndpointingConfig(complete_silence_ms=300.0)


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("He might even have been made amiable himself.", True),
        ("How was your day?", True),
        ("That is wonderful!", True),
        ("今天天气很好。", True),
        ("你好吗\uff1f", True),  # a full-width question mark
        ("오늘 날씨가 좋네요.", True),
        ("I went to the store and", False),  # no final mark
        ("I went to the store and.", False),  # a trailing conjunction, punctuated or not
        ("So I was thinking, um.", False),  # a trailing filler
        ("And then...", False),  # trailing off
        ("And then…", False),
        ("", False),
        (".", False),
    ],
)
def test_looks_complete(text: str, complete: bool) -> None:
    assert looks_complete(text) is complete


def _speculating(ep: Endpointer, silence_ms: float) -> SpeculationStarted:
    got = feed(ep, frames(1000, 0.9), frames(silence_ms, 0.0))
    (spec,) = [d for _i, d in of(got, SpeculationStarted)]
    assert isinstance(spec, SpeculationStarted) and not of(got, Endpoint)
    return spec


def test_a_finished_turn_ends_after_the_shorter_silence() -> None:
    ep = Endpointer(DETECTOR)
    spec = _speculating(ep, 200)
    assert ep.speculation_complete(spec.speech_end) == []  # 200 ms of silence: not yet
    got = feed(ep, frames(100, 0.0))  # 300 ms in all
    (endpoint,) = [d for _i, d in of(got, Endpoint)]
    assert isinstance(endpoint, Endpoint) and endpoint.use_speculation
    assert endpoint.reason is EndReason.SILENCE


def test_a_finished_turn_that_already_waited_long_enough_ends_at_once() -> None:
    ep = Endpointer(DETECTOR)
    spec = _speculating(ep, 350)
    decisions = ep.speculation_complete(spec.speech_end)
    assert [type(d) for d in decisions] == [Endpoint, UtteranceClosed]
    assert isinstance(decisions[0], Endpoint) and decisions[0].use_speculation
    assert not ep.in_utterance


def test_without_the_detector_or_its_verdict_the_full_silence_is_needed() -> None:
    for cfg, told in ((CFG, True), (DETECTOR, False)):
        ep = Endpointer(cfg)
        spec = _speculating(ep, 350)
        if told:
            assert ep.speculation_complete(spec.speech_end) == []
        got = feed(ep, frames(100, 0.0))  # 450 ms: still under min_silence_ms
        assert not of(got, Endpoint)
        got = feed(ep, frames(100, 0.0))
        assert of(got, Endpoint)


def test_a_verdict_on_a_stale_speculation_is_ignored() -> None:
    ep = Endpointer(DETECTOR)
    spec = _speculating(ep, 200)
    feed(ep, frames(500, 0.9), frames(200, 0.0))  # speech resumed: a new speculation runs
    assert ep.speculation_complete(spec.speech_end) == []
    got = feed(ep, frames(150, 0.0))  # 350 ms of silence: the old verdict must not end it
    assert not of(got, Endpoint)


# --- the quiet rule (docs/adr/0014-voice-latency.md, tenth round) ---------------------------------

QUIET = EndpointingConfig(complete_silence_ms=300.0, speculative_quiet_ms=96.0)
LOUD, SOFT = 0.2, 0.01  # frame RMS: a word, and its decay (under a tenth of the loudest)


def feed_levels(ep: Endpointer, *parts: list[tuple[float, float]]) -> list[tuple[int, Decision]]:
    """:func:`feed` with each frame's (probability, loudness)."""
    out: list[tuple[int, Decision]] = []
    for p, level in (f for part in parts for f in part):
        out.extend((ep.position // FRAME - 1, d) for d in ep.feed(p, level))
    return out


def sound(ms: float, p: float, level: float) -> list[tuple[float, float]]:
    return [(p, level)] * math.ceil(ms / CFG.frame_ms)


def test_quiet_frames_start_the_speculation_before_the_vads_silence_at_the_last_loud_frame() -> None:
    ep = Endpointer(QUIET)
    # 1 s of words, then the VAD's lag: 160 ms it still calls speech though the word has decayed
    got = feed_levels(ep, sound(1000, 0.9, LOUD), sound(160, 0.9, SOFT), sound(600, 0.0, 0.0))
    loud_frames = math.ceil(1000 / CFG.frame_ms)
    (i, spec), *_ = of(got, SpeculationStarted)
    assert i == loud_frames + 2  # the third quiet frame (96 ms), inside the VAD's lag
    assert isinstance(spec, SpeculationStarted) and spec.speech_end == loud_frames * FRAME
    assert spec.end == (i + 1) * FRAME  # the audio heard so far; the stream pads the rest
    assert len(of(got, SpeculationStarted)) == 1  # the VAD's silence later starts no second one
    (j, endpoint) = of(got, Endpoint)[0]
    assert isinstance(endpoint, Endpoint) and endpoint.use_speculation
    assert endpoint.speech_end == (loud_frames + 5) * FRAME  # the VAD's own end, for the audio kept
    assert j > i


def test_the_turn_detector_still_counts_the_vads_silence() -> None:
    ep = Endpointer(QUIET)
    got = feed_levels(ep, sound(1000, 0.9, LOUD), sound(160, 0.9, SOFT), sound(100, 0.0, 0.0))
    (_i, spec) = of(got, SpeculationStarted)[0]
    assert isinstance(spec, SpeculationStarted)
    assert ep.speculation_complete(spec.speech_end) == []  # ~100 ms of the VAD's silence: not yet
    got = feed_levels(ep, sound(200, 0.0, 0.0))
    assert [type(d) for _i, d in got] == [Endpoint, UtteranceClosed]


def test_a_loud_frame_after_the_quiet_cancels_it_and_the_next_quiet_starts_again() -> None:
    ep = Endpointer(QUIET)
    got = feed_levels(
        ep,
        sound(1000, 0.9, LOUD),
        sound(130, 0.9, SOFT),  # a short pause the VAD does not hear
        sound(500, 0.9, LOUD),
        sound(130, 0.9, SOFT),
        sound(600, 0.0, 0.0),
    )
    assert [type(d) for _i, d in got if not isinstance(d, PartialDue)] == RESUMED_THEN_ENDED
    (_i, cancel) = of(got, SpeculationCancelled)[0]
    assert cancel == SpeculationCancelled(CancelReason.SPEECH_RESUMED)
    second = [d for _i, d in of(got, SpeculationStarted)][1]
    assert isinstance(second, SpeculationStarted) and second.speech_end == ep.voice_end


def test_soft_speech_the_vad_keeps_hearing_hands_the_decision_back_to_the_vad() -> None:
    ep = Endpointer(QUIET)
    loud_frames = math.ceil(1000 / CFG.frame_ms)
    # soft words after loud ones: quiet by loudness, but longer than any decay of a word
    got = feed_levels(ep, sound(1000, 0.9, LOUD), sound(600, 0.9, SOFT), sound(600, 0.0, 0.0))
    specs = [(i, d) for i, d in of(got, SpeculationStarted)]
    assert len(specs) == 2
    (i1, first), (i2, second) = specs
    assert isinstance(first, SpeculationStarted) and first.speech_end == loud_frames * FRAME
    (k, cancel) = of(got, SpeculationCancelled)[0]
    assert cancel == SpeculationCancelled(CancelReason.SPEECH_RESUMED) and i1 < k < i2
    # the VAD's speech ran QUIET_SPAN_MS past the anchor: cancelled then, not before
    assert (k + 1 - loud_frames) * CFG.frame_ms > QUIET_SPAN_MS >= (k - loud_frames) * CFG.frame_ms
    # the second comes from the VAD's silence and covers the soft words
    soft_end = (loud_frames + math.ceil(600 / CFG.frame_ms)) * FRAME
    assert isinstance(second, SpeculationStarted) and second.speech_end == soft_end
    (endpoint,) = [d for _i, d in of(got, Endpoint)]
    assert isinstance(endpoint, Endpoint) and endpoint.use_speculation and endpoint.speech_end == soft_end


def test_without_loudness_or_with_the_rule_off_only_the_vads_silence_speculates() -> None:
    for cfg, level in ((QUIET, None), (EndpointingConfig(complete_silence_ms=300.0), SOFT)):
        ep = Endpointer(cfg)
        for _ in range(math.ceil(1000 / CFG.frame_ms)):
            ep.feed(0.9, None if level is None else LOUD)
        early = [d for _ in range(5) for d in ep.feed(0.9, level)]  # 160 ms the VAD calls speech
        assert not [d for d in early if isinstance(d, SpeculationStarted)]
        later = [d for _ in range(5) for d in ep.feed(0.0, level)]  # the VAD's 160 ms
        (spec,) = [d for d in later if isinstance(d, SpeculationStarted)]
        assert spec.speech_end == ep.speech_end


def test_a_speculation_speech_interrupted_counts_as_the_partial_of_its_audio() -> None:
    ep = Endpointer(QUIET)
    got: list[tuple[int, Decision]] = []
    for p, level in sound(1000, 0.9, LOUD) + sound(130, 0.9, SOFT) + sound(1000, 0.9, LOUD):
        for d in ep.feed(p, level):
            got.append((ep.position // FRAME - 1, d))
            if isinstance(d, PartialDue):
                ep.partial_finished()  # decoded at once
    (c, _cancel) = of(got, SpeculationCancelled)[0]
    after = [i for i, _d in of(got, PartialDue) if i > c]
    assert after, "speech went on for a second: a partial is due"
    # not at once: the cancelled speculation decoded the audio up to the cancel
    assert (after[0] - c) * CFG.frame_ms >= CFG.partial_interval_ms - CFG.frame_ms


def test_a_refused_quiet_speculation_is_tried_again_on_the_next_quiet_frame() -> None:
    ep = Endpointer(QUIET)
    got = feed_levels(ep, sound(1000, 0.9, LOUD), sound(96, 0.9, SOFT))
    (_i, spec) = of(got, SpeculationStarted)[0]
    assert isinstance(spec, SpeculationStarted) and spec.quiet
    ep.speculation_refused()  # the recognizer was busy
    retry = ep.feed(0.9, SOFT)
    assert len(retry) == 1 and isinstance(retry[0], SpeculationStarted) and retry[0].quiet
    assert retry[0].speech_end == spec.speech_end
    assert ep.feed(0.9, SOFT) == []  # one running: no second
