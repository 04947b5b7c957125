"""The avatar layer's parts on their own: mouth frames from audio, the pose file's validation, the
animator's interpolation and barge-in, and the hub's events (mouth per chunk, idle, interrupt)."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from pathlib import Path

import pytest

from avatar.application.avatar import (
    PARAMETERS,
    AvatarEvent,
    AvatarHub,
    ExpressionEvent,
    IdleEvent,
    InterruptedEvent,
    MouthEvent,
    PoseConfigError,
    StateEvent,
    Subscription,
    load_pose_config,
)
from avatar.application.avatar.animator import AvatarAnimator
from avatar.application.avatar.events import MouthFrame, Vowel
from avatar.application.avatar.hub import ENDED_KEPT, INTERRUPTED_KEPT
from avatar.application.avatar.mouth import MouthAnalyzer, PhonemeTiming, vowel_of
from avatar.application.avatar.poses import parse_pose_config
from avatar.domain.models import AudioChunk, Emotion
from avatar.settings import REPO_ROOT

SR = 16000


def tone(ms: float, amplitude: float, sr: int = SR) -> bytes:
    n = int(sr * ms / 1000)
    return b"".join(
        int(amplitude * 32767 * math.sin(2 * math.pi * 180 * i / sr)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


def silence(ms: float, sr: int = SR) -> bytes:
    return b"\x00\x00" * int(sr * ms / 1000)


# --- mouth -----------------------------------------------------------------------------------


def test_mouth_opens_with_loud_audio_and_closes_in_silence() -> None:
    analyzer = MouthAnalyzer()
    frames = analyzer.frames(silence(100) + tone(200, 0.5) + silence(200), SR)
    assert len(frames) == 25  # 500 ms at 20 ms a frame (50 Hz)
    assert [f.offset_ms for f in frames[:3]] == [0.0, 20.0, 40.0]
    assert all(f.open == 0.0 for f in frames[:5])
    assert max(f.open for f in frames[5:15]) > 0.8
    assert frames[-1].open < 0.05 and all(f.vowel is None for f in frames)
    quiet = MouthAnalyzer().frames(tone(200, 0.01), SR)
    loud = MouthAnalyzer().frames(tone(200, 0.3), SR)
    assert max(f.open for f in quiet) < max(f.open for f in loud)


def test_vowels_come_from_phoneme_timing() -> None:
    ipa = ("\u0251\u02d0", "\u026a", "u\u02d0", "\u0259", "o\u028a", "k", "")  # IPA vowels and a k
    assert [vowel_of(p) for p in ipa] == [
        Vowel.A,
        Vowel.I,
        Vowel.U,
        Vowel.E,
        Vowel.O,
        None,
        None,
    ]
    phonemes = [PhonemeTiming("h", 0, 40), PhonemeTiming("\u0251", 40, 140), PhonemeTiming("i", 140, 200)]
    frames = MouthAnalyzer().frames(tone(200, 0.5), SR, phonemes)
    assert frames[0].vowel is None  # a consonant
    assert frames[3].vowel is Vowel.A and frames[8].vowel is Vowel.I


# --- pose file -------------------------------------------------------------------------------


def test_the_shipped_pose_file_is_valid() -> None:
    config = load_pose_config(REPO_ROOT / "config" / "avatar_poses.toml")
    assert set(config.emotions) == set(Emotion)
    assert all(0.1 <= pose.transition_s <= 0.5 for pose in config.emotions.values())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[emotions.joyful]\nparameters = {}", "unknown emotion"),
        ("[emotions.happy]\ntransition_s = 0.9", "outside 0.1..0.5"),
        ("[emotions.happy]\nparameters = { Nose = 1.0 }", "unknown parameter 'Nose'"),
        ("[emotions.happy]\nparameters = { AvatarSmile = 3.0 }", "outside its range -1..1"),
        ('[emotions.happy]\nparameters = { AvatarSmile = "big" }', "must be a number"),
        ("[emotions.happy]\nhotkey = ''", "hotkey must be a non-empty string"),
        ("[emotions.happy]\ncolour = 1", "unknown key(s) ['colour']"),
        ("[poses]\nx = 1", "unknown section(s) ['poses']"),
        ("[idle]\ninterval_s = [3, 1]", "needs 0.2 <= min <= max"),
        ("[idle]\nhead_range_deg = 45", "within 0..30"),
        ("[idle]\nreturn_steps = 0", "return_steps must be an integer 1..10"),
        ("[emotions.happy\n", "is not valid TOML"),
    ],
)
def test_pose_file_mistakes_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "poses.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PoseConfigError) as info:
        load_pose_config(path)
    assert needle in info.value.message and str(path) in info.value.message


def test_a_missing_pose_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PoseConfigError, match="cannot read the pose mapping"):
        load_pose_config(tmp_path / "nope.toml")


# --- animator --------------------------------------------------------------------------------


def test_animator_interpolates_expressions_and_plays_mouth_in_time() -> None:
    animator = AvatarAnimator()
    animator.apply(
        ExpressionEvent(
            turn_id=None, emotion="happy", parameters={"AvatarSmile": 1.0}, transition_ms=200, hotkey="Smile"
        ),
        now=10.0,
    )
    assert animator.values(10.0)["AvatarSmile"] == pytest.approx(0.0)
    assert animator.values(10.1)["AvatarSmile"] == pytest.approx(0.5)
    assert animator.values(10.3)["AvatarSmile"] == pytest.approx(1.0)
    assert animator.hotkeys == ["Smile"]
    frames = [MouthFrame(offset_ms=i * 20.0, open=0.1 * (i + 1), vowel=Vowel.O) for i in range(5)]
    event = MouthEvent(
        turn_id="t1", seq=0, chunk_offset_ms=0, duration_ms=100, frame_ms=20, source="phonemes", frames=frames
    )
    animator.apply(event, now=20.0)
    animator.apply(event.model_copy(update={"seq": 1, "chunk_offset_ms": 100.0}), now=20.01)
    assert animator.values(20.005)["AvatarMouthOpen"] == pytest.approx(0.1)
    values = animator.values(20.045)
    assert values["AvatarMouthOpen"] == pytest.approx(0.3) and values["AvatarVowelO"] == pytest.approx(0.3)
    assert animator.values(20.125)["AvatarMouthOpen"] == pytest.approx(0.2)  # 2nd chunk queued after 1st
    assert animator.speaking(20.15)
    animator.apply(InterruptedEvent(turn_id="t1"), now=20.15)
    assert animator.values(20.15)["AvatarMouthOpen"] == 0.0 and not animator.speaking(20.15)


def test_animator_clamps_to_each_range() -> None:
    animator = AvatarAnimator()
    animator.apply(
        ExpressionEvent(turn_id=None, emotion="x", parameters={"AvatarHeadX": 25.0}, transition_ms=0), now=0
    )
    animator.apply(IdleEvent(active=True, parameters={"AvatarHeadX": 20.0}, transition_ms=0), now=0)
    values = animator.values(1.0)
    assert values["AvatarHeadX"] == PARAMETERS["AvatarHeadX"].max
    assert set(values) == set(PARAMETERS)


# --- hub ------------------------------------------------------------------------------------


async def drain(sub: Subscription, seconds: float) -> list[AvatarEvent]:
    """Every event that arrives within ``seconds``."""
    events: list[AvatarEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(sub.get(), left)
        except TimeoutError:
            break
        if event is not None:
            events.append(event)
    return events


def _hub() -> AvatarHub:
    raw = {
        "emotions": {"happy": {"parameters": {"AvatarSmile": 0.9}, "transition_s": 0.25, "hotkey": "Smile"}},
        "idle": {"interval_s": [0.2, 0.3], "transition_s": 0.2, "return_steps": 3, "return_step_s": 0.05},
    }
    return AvatarHub(parse_pose_config(raw), rng=random.Random(7))


async def test_hub_turns_reply_audio_into_mouth_events_tied_to_chunks() -> None:
    hub = _hub()
    sid, turn = uuid.uuid4(), uuid.uuid4()
    sub = hub.subscribe(sid)
    hello = await sub.get()
    assert hello is not None and hello.type == "hello" and len(hello.parameters) == len(PARAMETERS)
    hub.phase_changed(sid, "thinking")
    hub.reply_emotion(sid, turn, Emotion.HAPPY)
    hub.phase_changed(sid, "speaking")
    for seq, pcm in enumerate((tone(100, 0.5), silence(200), tone(100, 0.5))):
        hub.reply_audio(sid, turn, seq, AudioChunk(pcm=pcm, sample_rate=SR))
    events: list[AvatarEvent | None] = []
    while len([e for e in events if isinstance(e, MouthEvent)]) < 3:
        event = await asyncio.wait_for(sub.get(), 2)
        events.append(event)
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states == ["thinking", "speaking"]
    (expression,) = [e for e in events if isinstance(e, ExpressionEvent)]
    assert expression.parameters["AvatarSmile"] == 0.9 and expression.transition_ms == 250
    assert expression.hotkey == "Smile" and expression.parameters["AvatarBrows"] == 0.0
    mouths = [e for e in events if isinstance(e, MouthEvent)]
    assert [m.seq for m in mouths] == [0, 1, 2] and [m.chunk_offset_ms for m in mouths] == [0, 100, 300]
    assert all(m.turn_id == str(turn) and m.source == "level" for m in mouths)
    assert max(f.open for f in mouths[0].frames) > 0.8 and mouths[1].frames[-1].open < 0.1
    assert hub.stage_id == sid
    await hub.aclose()


async def test_unwatched_reply_audio_skips_the_mouth_work_but_keeps_the_turn_clock() -> None:
    hub = _hub()
    sid, turn = uuid.uuid4(), uuid.uuid4()
    hub.phase_changed(sid, "speaking")
    for seq in range(3):  # nobody renders this session yet
        hub.reply_audio(sid, turn, seq, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))
    channel = hub._channels[sid]
    assert channel.worker is None and channel.inbox.empty()
    sub = hub.subscribe(sid)  # a renderer joins in the middle of the reply
    hub.reply_audio(sid, turn, 3, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))
    while not isinstance(mouth := await asyncio.wait_for(sub.get(), 30), MouthEvent):
        pass  # hello, idle motion
    assert (mouth.seq, mouth.chunk_offset_ms) == (3, 300)
    assert max(f.open for f in mouth.frames) > 0.5
    await hub.aclose()


async def test_hub_interrupt_drops_queued_audio_and_is_sent_at_once() -> None:
    hub = _hub()
    sid, turn = uuid.uuid4(), uuid.uuid4()
    sub = hub.subscribe(sid)
    await sub.get()
    hub.phase_changed(sid, "speaking")
    for seq in range(20):  # queued: the worker has not run yet
        hub.reply_audio(sid, turn, seq, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))
    hub.reply_interrupted(sid, turn)
    hub.reply_audio(sid, turn, 20, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))  # late chunk
    hub.phase_changed(sid, "listening")
    kinds = [e.type for e in await drain(sub, 0.4)]
    assert "interrupted" in kinds and "mouth" not in kinds
    await hub.aclose()


async def test_a_long_session_remembers_only_its_latest_interrupted_turns() -> None:
    """Issue 15, item 7 (soak without growth): a session interrupted turn after turn keeps a bounded
    record of them, and the latest interrupted turn's late audio is still dropped."""
    hub = _hub()
    sid = uuid.uuid4()
    sub = hub.subscribe(sid)
    await sub.get()
    turns = [uuid.uuid4() for _ in range(500)]
    for turn in turns:
        hub.phase_changed(sid, "speaking")
        hub.reply_interrupted(sid, turn)
    assert len(hub._channels[sid].interrupted) == INTERRUPTED_KEPT
    hub.reply_audio(sid, turns[-1], 1, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))  # late chunk
    assert "mouth" not in [e.type for e in await drain(sub, 0.3)]
    await hub.aclose()


async def test_idle_moves_while_listening_returns_to_centre_and_pauses_while_speaking() -> None:
    hub = _hub()
    sid = uuid.uuid4()
    sub = hub.subscribe(sid)
    await sub.get()
    idle: list[IdleEvent] = []
    while len(idle) < 2:
        event = await asyncio.wait_for(sub.get(), 2)
        if isinstance(event, IdleEvent):
            idle.append(event)
    assert all(e.active for e in idle) and any(abs(e.parameters["AvatarHeadX"]) > 0 for e in idle)
    hub.phase_changed(sid, "speaking")
    back = [e for e in await drain(sub, 0.8) if isinstance(e, IdleEvent)]
    assert [e.active for e in back] == [False, False, False]  # three steps, then nothing
    heads = [abs(e.parameters["AvatarHeadX"]) for e in back]
    assert heads == sorted(heads, reverse=True) and back[-1].parameters["AvatarHeadX"] == 0.0
    hub.phase_changed(sid, "listening")
    event = await asyncio.wait_for(sub.get(), 2)
    while not isinstance(event, IdleEvent):
        event = await asyncio.wait_for(sub.get(), 2)
    assert event.active
    await hub.aclose()


async def test_a_watched_session_takes_an_empty_stage_and_idles_there_before_any_reply() -> None:
    hub = _hub()
    stage = hub.subscribe_stage()
    first, second = uuid.uuid4(), uuid.uuid4()
    sub = hub.subscribe(first)
    await sub.get()
    assert hub.stage_id == first
    events = await drain(stage, 0.6)
    assert events[0] is not None and events[0].type == "hello"
    assert any(isinstance(e, IdleEvent) and e.active for e in events)
    # A second watched session does not steal a stage that is taken; its first reply does.
    hub.subscribe(second)
    assert hub.stage_id == first
    hub.phase_changed(second, "thinking")
    assert hub.stage_id == second
    await hub.aclose()


async def test_a_held_stage_stays_with_the_live_show_until_released() -> None:
    hub = _hub()
    show, chat = uuid.uuid4(), uuid.uuid4()
    hub.hold_stage(show)
    assert hub.stage_id == show
    hub.phase_changed(chat, "thinking")  # a web conversation replies while the show runs
    hub.subscribe(chat)
    assert hub.stage_id == show
    hub.hold_stage(None)
    hub.phase_changed(chat, "speaking")
    assert hub.stage_id == chat
    # The show's session closing also releases a hold.
    hub.hold_stage(show)
    hub.session_closed(show)
    hub.phase_changed(chat, "thinking")
    assert hub.stage_id == chat
    await hub.aclose()


async def test_late_events_of_a_closed_session_open_no_channel_again() -> None:
    """A reply's last chunk or the phase going back to listening can arrive after the session
    closed: they used to open a new channel that nothing closed (one per ended session)."""
    hub = _hub()
    sid, turn = uuid.uuid4(), uuid.uuid4()
    hub.phase_changed(sid, "speaking")
    hub.session_closed(sid)
    for _ in range(5):
        await asyncio.sleep(0)  # the close runs
    assert sid not in hub._channels
    hub.phase_changed(sid, "listening")
    hub.reply_emotion(sid, turn, Emotion.HAPPY)
    hub.reply_audio(sid, turn, 7, AudioChunk(pcm=tone(100, 0.5), sample_rate=SR))
    hub.reply_interrupted(sid, turn)
    assert sid not in hub._channels and hub.stage_id is None
    # A new turn of the same session (it was resumed) or a renderer watching it opens it again.
    hub.phase_changed(sid, "thinking")
    assert sid in hub._channels and hub.stage_id == sid
    other = uuid.uuid4()
    hub.session_closed(other)
    sub = hub.subscribe(other)
    assert (await sub.get()) is not None and other in hub._channels
    # The closed sessions remembered are bounded.
    for _ in range(ENDED_KEPT + 10):
        hub.session_closed(uuid.uuid4())
    assert len(hub._ended) == ENDED_KEPT
    await hub.aclose()
