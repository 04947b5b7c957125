"""The conversation benchmark's own arithmetic (where a clip's speech ends, the finals' WER) and its
client process."""

from __future__ import annotations

import math

import numpy as np

from avatar.bench import live
from avatar.bench.conversation import (
    CrowdLevel,
    Tally,
    TurnResult,
    _conversation_apart,
    _crowd_section,
    _tone,
    _wer,
)
from avatar.bench.speech import load_librivox
from avatar.bootstrap import build_instant_container
from avatar.presentation.app import create_app
from avatar.settings import Settings
from avatar_common.audio import last_speech_ms


def _pcm(*parts: tuple[float, float]) -> bytes:
    """PCM16 at 16 kHz from (seconds, amplitude) parts of a 220 Hz tone (amplitude 0: silence)."""
    out = []
    for seconds, amplitude in parts:
        t = np.arange(int(16000 * seconds)) / 16000
        out.append((amplitude * np.sin(2 * np.pi * 220 * t)).astype("<i2"))
    return np.concatenate(out).tobytes()


def test_speech_ends_at_the_last_loud_frame_not_at_the_clip_end() -> None:
    assert last_speech_ms(_pcm((0.2, 0), (1.0, 8000), (0.7, 0))) == 1200.0
    # a faint tail (breath, room noise) under a tenth of the loudest frame is not speech
    assert last_speech_ms(_pcm((1.0, 8000), (0.3, 300), (0.2, 0))) == 1000.0
    assert last_speech_ms(_pcm((0.5, 0))) == 0.0
    assert last_speech_ms(b"") == 0.0


def test_real_clips_end_before_their_trailing_silence() -> None:
    clips = load_librivox()
    assert clips, "pocketsphinx-testdata provides the LibriVox clips"
    for clip in clips:
        end = last_speech_ms(clip.pcm)
        assert 0.5 * clip.duration_s * 1000 < end <= clip.duration_s * 1000


def test_wer_of_finals_ignores_case_and_punctuation() -> None:
    turns = [
        TurnResult(1.0, {}, "It was the best of times.", "it was the best of times"),
        TurnResult(1.0, {}, "it was the worst", "it was the worst of times"),
        TurnResult(1.0, {}, "no reference", ""),
    ]
    assert math.isclose(_wer(turns), 2 / 12 * 100)
    assert math.isnan(_wer([]))


def test_the_crowd_counts_only_model_written_replies_and_every_utterance_without_one() -> None:
    fallbacks = frozenset({"Sorry, my thoughts got tangled. Could you say that again?"})
    tally = Tally(
        turns=[
            TurnResult(900.0, {}, "hello", "hello", reply_text="Hi! Nice to meet you."),
            TurnResult(1500.0, {}, "how are you", "how are you", reply_text=next(iter(fallbacks))),
            TurnResult(2500.0, {}, "tell me", "tell me", reply_text="Something.", notices=("BUSY",)),
            TurnResult(1100.0, {}, "bye", "bye", reply_text="Bye!", notices=("VOICE_SUBSTITUTED",)),
        ],
        failed=["RuntimeError: BUSY: the recognizer could not transcribe the utterance in time"],
    )
    level = CrowdLevel(sessions=3, tally=tally, utterances=5, fallbacks=fallbacks)
    assert level.real_replies == 2  # the canned line and a reply told BUSY are not the model's
    assert level.dropped == 1 and level.busy == 2
    section = _crowd_section([level], turns=2, note="a shared machine")
    row = next(line for line in section.splitlines() if line.startswith("| 3 |"))
    assert row.split(" | ")[1:6] == ["5", "4", "40 %", "1", "2"]
    assert "a shared machine" in section and "could not transcribe" in section


def test_first_token_growth_compares_turn_20_with_turn_2_and_fits_a_trend() -> None:
    from avatar.bench.conversation import ttft_growth

    # docs/benchmarks.md, "conversation", run 4: turn 2 227 ms, turn 20 307 ms
    run4 = [227.5, 227.2, 310.7, 282.9, 255.6, 406.1, 331.6, 354.8, 280.6, 259.7]
    run4 += [325.0, 324.9, 291.0, 333.7, 261.9, 415.3, 279.4, 324.9, 347.0, 306.6]
    growth = ttft_growth(run4)
    assert growth is not None and growth.last_turn == 20
    assert math.isclose(growth.single_percent, 100 * (306.6 - 227.2) / 227.2)
    # medians of turns 2-4 (282.9) and 18-20 (324.9)
    assert math.isclose(growth.median_percent, 100 * (324.9 - 282.9) / 282.9)
    flat = ttft_growth([900.0] + [300.0, 320.0, 280.0] * 6 + [300.0])
    assert flat is not None and abs(flat.slope_ms) < 1.0 and abs(flat.trend_percent) < 5.0
    rising = ttft_growth([900.0] + [300.0 + 100.0 * n for n in range(19)])
    assert rising is not None and math.isclose(rising.slope_ms, 100.0)
    assert ttft_growth([900.0, 300.0, 310.0]) is None  # too few turns


def test_the_by_turn_table_shows_each_turn_s_stages() -> None:
    from avatar.bench.conversation import BargeIn, Floor, RealRun, _real_section

    stages = {"endpoint": 650.0, "asr_final": 60.0, "llm_ttft": 250.0, "first_clause": 300.0}
    turns = [
        TurnResult(1100.0 + i, {**stages, "tts_first_chunk": 90.0 + i}, "hi", "hi", reply_text="Hello.")
        for i in range(3)
    ]
    run = RealRun(Tally(turns=turns), BargeIn(), Floor(300.0, 350.0, 150.0, 120.0), rss_mb=1500.0)
    section = _real_section(run)
    header = next(line for line in section.splitlines() if line.startswith("| turn |"))
    assert header.split(" | ")[1:] == [
        "llm_ttft",
        "voice-to-voice",
        "endpoint",
        "asr_final",
        "first_clause",
        "tts_first_chunk |",
    ]
    third = next(line for line in section.splitlines() if line.startswith("| 3 |"))
    assert third.split(" | ")[1:3] == ["250.000", "1102.000"] and third.endswith("| 92.000 |")


def test_the_growth_is_printed_for_the_first_token_and_for_the_first_clause() -> None:
    from avatar.bench.conversation import BargeIn, Floor, RealRun, _real_section

    turns = [
        TurnResult(
            1000.0,
            {"llm_ttft": 200.0, "first_clause": 300.0 + (100.0 if n >= 17 else 0.0)},
            "hi",
            "hi",
            reply_text="Hello.",
        )
        for n in range(20)
    ]
    run = RealRun(Tally(turns=turns), BargeIn(), Floor(300.0, 350.0, 150.0, 120.0), rss_mb=1500.0)
    section = _real_section(run)
    assert "Growth of the first token over the conversation: turn 20 vs turn 2 +0 %" in section
    # turns 18-20 wait 400 ms for their first clause against 300 at turns 2-4
    assert "The first speakable clause over the same turns: turn 20 vs turn 2 +33 %" in section
    assert "median of turns 2-4 vs the last three +33 %" in section


def test_the_floor_is_printed_as_a_sum_and_with_the_speculation_inside_the_silence() -> None:
    from avatar.bench.conversation import BargeIn, Floor, RealRun, _real_section

    floor = Floor(300.0, 440.0, 150.0, 120.0, speculation_ms=96.0)
    assert floor.total_ms == 1010.0
    assert floor.overlapped_ms == 96.0 + 440.0 + 150.0 + 120.0  # the decode outlasts the silence
    assert Floor(300.0, 100.0, 150.0, 120.0, speculation_ms=96.0).overlapped_ms == 570.0  # the silence
    turns = [TurnResult(1000.0, {"endpoint": 540.0}, "hi", "hi", reply_text="Hello.")]
    section = _real_section(RealRun(Tally(turns=turns), BargeIn(), floor, rss_mb=1500.0))
    assert "voice-to-voice P50 / floor = 0.99" in section  # 1000 / 1010
    assert "the floor is 806 ms and voice-to-voice P50 / floor = 1.24" in section


async def test_the_conversation_client_talks_from_a_process_of_its_own() -> None:
    """The 20-turn conversation's client runs in a spawned process (as a browser would, not in the
    server's event loop): over a real server with the instant engine set, both turns come back
    with their stage records, timed by the client."""
    settings = Settings(environment="test")
    container = build_instant_container(settings, utterance_ms=1000)
    try:
        key = await live.api_user(container)
        async with live.running_server(create_app(settings, container)) as base:
            tally = await _conversation_apart(base, key, [_tone(1000)] * 2, 60, ["", ""])
    finally:
        await container.aclose()
    assert tally.failed == [] and len(tally.turns) == 2
    for turn in tally.turns:
        assert turn.total_ms > 0 and "e2e" in turn.stages
