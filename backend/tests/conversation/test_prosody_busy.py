"""A turn whose prosody request finds the analysis queue full (docs/protocol.md, notice ``BUSY``):
a real session on this process's real bounded queue. Nothing stored is lost, so the client gets a
``notice`` naming the turn, never an ``error``; the skip is counted; once the queue has room the
next turn is analyzed again. Other queue failures are still reported as lost writes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from avatar.application.conversation import PROSODY_TOPIC
from avatar.application.conversation.recorder import BUSY
from avatar.domain.errors import DependencyError
from avatar.infrastructure.queue import InProcessTaskQueue
from backend.tests.conversation.test_pipeline import Rig
from backend.tests.conversation.test_spooled_writes import spoken_turn


def full_queue(rig: Rig, bound: int = 2) -> InProcessTaskQueue:
    """A real in-process queue of ``bound`` tasks, already full, not yet consumed."""
    queue = InProcessTaskQueue(max_pending=bound)
    rig.deps.queue = queue
    return queue


async def fill(queue: InProcessTaskQueue, bound: int = 2) -> None:
    for n in range(bound):
        await queue.publish(PROSODY_TOPIC, {"filler": n})


async def test_a_full_prosody_queue_skips_the_analysis_with_a_busy_notice_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    queue = full_queue(rig)
    await fill(queue)
    handled: list[dict[str, Any]] = []

    async def collect(payload: dict[str, Any]) -> None:
        handled.append(payload)

    queue.subscribe(PROSODY_TOPIC, collect)
    session = await rig.session()
    try:
        await spoken_turn(rig, session)
        await spoken_turn(rig, session)

        assert not [m for m in rig.messages if m["type"] == "error"], rig.messages
        assert session.writer.failed == 0
        assert rig.metrics.write_failures == []
        busy = [m for m in rig.messages if m["type"] == "notice" and m["code"] == BUSY]
        turns = {m["turn_id"]: m for m in rig.messages if m["type"] == "turn_started"}
        assert len(turns) == 2
        # one notice per skipped turn, each naming its turn
        assert [m["turn_id"] for m in busy] == list(turns)
        for number, notice in enumerate(busy, start=1):
            assert f"prosody analysis of turn {number} was skipped" in notice["message"]
            assert "queue is full" in notice["message"]
        assert rig.metrics.skipped_tasks == [PROSODY_TOPIC, PROSODY_TOPIC]
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("prosody analysis of turn 2 skipped" in line for line in logged), logged
        # the turns themselves, their audio and transcriptions are stored
        assert sorted(t.turn_number for t in rig.db.tables.turns.values()) == [1, 2]
        assert len(rig.db.tables.transcriptions) == 2
        assert sum(k.startswith("raw_inputs/") for k in rig.store.objects) == 2
        assert await queue.pending(PROSODY_TOPIC) == 2  # only the fillers

        # the consumer frees the queue: the next turn is queued for analysis, nobody is told
        await queue.start()
        await queue.join(PROSODY_TOPIC)
        await spoken_turn(rig, session)
        await queue.join(PROSODY_TOPIC)
        analyzed = [p for p in handled if "filler" not in p]
        third = [tid for tid, row in rig.db.tables.transcriptions.items() if tid not in _ids(busy, rig)]
        assert [uuid.UUID(p["transcription_id"]) for p in analyzed] == third
        assert len([m for m in rig.messages if m["type"] == "notice" and m["code"] == BUSY]) == 2
        assert not [m for m in rig.messages if m["type"] == "error"]
    finally:
        await session.aclose()
        await queue.stop()


def _ids(busy: list[dict[str, Any]], rig: Rig) -> set[uuid.UUID]:
    """The transcription ids of the turns the ``busy`` notices name."""
    turn_ids = {uuid.UUID(m["turn_id"]) for m in busy}
    return {tid for tid, row in rig.db.tables.transcriptions.items() if row[0] in turn_ids}


class UnreachableQueue(InProcessTaskQueue):
    """A queue whose server cannot be reached (as Redis down): not a full queue."""

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> str:
        raise DependencyError("task queue unreachable")


async def test_an_unreachable_queue_is_still_reported_as_a_lost_prosody_request() -> None:
    rig = Rig()
    rig.deps.queue = UnreachableQueue()
    session = await rig.session()
    try:
        await spoken_turn(rig, session)
    finally:
        await session.aclose()
    errors = [m for m in rig.messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["PERSISTENCE_FAILED"]
    assert "turn 1 prosody request" in errors[0]["message"]
    assert not [m for m in rig.messages if m["type"] == "notice" and m["code"] == BUSY]
    assert rig.metrics.skipped_tasks == []
