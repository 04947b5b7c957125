"""The outbox's shedding rule and the playout arithmetic, as plain objects (no I/O, no clock)."""

from __future__ import annotations

import asyncio
import uuid

from avatar.application.conversation.events import (
    AudioChunkMsg,
    ErrorMsg,
    LlmTokenMsg,
    NoticeMsg,
    ServerMessage,
    TurnCompletedMsg,
)
from avatar.application.conversation.outbox import AUDIO_SHED, SHED_TURNS_KEPT, Outbox
from avatar.application.conversation.playout import Playout
from avatar.domain.models import Emotion, TTSMode

TURN = uuid.uuid4()


def audio(seq: int, turn: uuid.UUID = TURN) -> AudioChunkMsg:
    return AudioChunkMsg(
        turn_id=turn, data=b"\x00\x00", sr=16000, mode=TTSMode.FAST, seq=seq, duration_ms=100.0, text="hi"
    )


def token(i: int) -> LlmTokenMsg:
    return LlmTokenMsg(turn_id=TURN, token=f"t{i}")


def drain(outbox: Outbox) -> list[ServerMessage]:
    async def run() -> list[ServerMessage]:
        return [await outbox.get() for _ in range(len(outbox))]

    return asyncio.run(run())


def test_control_messages_are_never_dropped_even_past_the_limit() -> None:
    shed: list[int] = []
    outbox = Outbox(limit=5, on_shed=shed.append)
    outbox.attached = True
    for i in range(20):
        outbox.send(token(i))
    outbox.send(ErrorMsg(code="X", message="y"))
    sent = drain(outbox)
    assert [m.token for m in sent if isinstance(m, LlmTokenMsg)] == [f"t{i}" for i in range(20)]
    assert isinstance(sent[-1], ErrorMsg) and shed == [] and outbox.shed == 0


def test_past_the_limit_the_oldest_audio_is_shed_once_announced_and_counted() -> None:
    shed: list[int] = []
    outbox = Outbox(limit=4, on_shed=shed.append)
    outbox.attached = True
    outbox.send(token(0))
    for seq in range(6):
        outbox.send(audio(seq))
    done = TurnCompletedMsg(turn_id=TURN, text="x", emotion=Emotion.HAPPY, interrupted=False, latency_ms={})
    outbox.send(done)
    sent = drain(outbox)
    # the queue holds the token, the notice, the newest chunk and turn_completed: at the limit
    assert [m.seq for m in sent if isinstance(m, AudioChunkMsg)] == [5]
    notices = [m for m in sent if isinstance(m, NoticeMsg)]
    assert len(notices) == 1 and notices[0].code == AUDIO_SHED and notices[0].turn_id == TURN
    assert isinstance(sent[0], LlmTokenMsg) and isinstance(sent[-1], TurnCompletedMsg)
    assert sum(shed) == outbox.shed == 5 and len(sent) == 4


def test_a_slow_clients_long_session_remembers_only_its_latest_shed_turns() -> None:
    """Issue 15, item 7 (soak without growth): turn after turn shed keeps a bounded record, and each
    turn is still announced once."""
    outbox = Outbox(limit=2)
    outbox.attached = True
    turns = [uuid.uuid4() for _ in range(300)]
    notices: list[uuid.UUID | None] = []
    for turn in turns:
        for seq in range(4):
            outbox.send(audio(seq, turn))
        notices += [m.turn_id for m in drain(outbox) if isinstance(m, NoticeMsg)]
    assert notices == turns
    assert len(outbox._shed_turns) == SHED_TURNS_KEPT


def test_audio_is_not_queued_for_a_detached_client_and_barge_in_discards_a_turns_audio() -> None:
    outbox = Outbox(limit=10)
    outbox.send(audio(0))
    assert len(outbox) == 0
    outbox.attached = True
    other = uuid.uuid4()
    outbox.send(audio(1))
    outbox.send(audio(2, other))
    outbox.send(token(1))
    assert outbox.discard_audio(TURN) == 1
    assert [type(m).__name__ for m in drain(outbox)] == ["AudioChunkMsg", "LlmTokenMsg"]


def test_heard_text_counts_only_fully_sent_clauses_that_fit_the_played_time() -> None:
    playout = Playout()
    first = playout.start_clause("Hello there, ")
    assert playout.sent(first, 400.0, now=10.0) is True
    assert playout.sent(first, 200.0, now=10.1) is False
    first.complete = True
    second = playout.start_clause("my friend!")
    playout.sent(second, 500.0, now=10.2)  # not complete: never counted as heard
    assert playout.heard_text(now=10.0, played_ms=598.0) == ""  # 1 ms of tolerance
    assert playout.heard_text(now=10.0, played_ms=600.0) == "Hello there,"
    assert playout.heard_text(now=20.0, played_ms=5000.0) == "Hello there,"
    assert playout.heard_text(now=10.7) == "Hello there,"  # real time since the first chunk
    assert playout.heard_text(now=10.3) == ""
    assert playout.heard_text(now=10.3, heard_text="  Hello  ") == "Hello"


def test_playback_left_is_the_sent_audio_minus_the_time_since_the_first_chunk() -> None:
    playout = Playout()
    before = (playout.started, playout.left_ms(now=5.0), playout.heard_text(now=5.0))
    assert before == (False, 0.0, "")
    clause = playout.start_clause("one")
    assert playout.sent(clause, 1000.0, now=5.0) and playout.started
    assert playout.left_ms(now=5.25) == 750.0
    assert playout.left_ms(now=6.5) == -500.0
