"""Storage slower than the conversation (docs/resilience.md, "Storage slower than talk"): once a
session has ``max_pending_writes`` writes waiting, it takes no new turn and tells the person
(``notice`` ``BUSY``) instead of queueing without bound; nothing already queued is dropped, and once
the writes drain the conversation goes on."""

from __future__ import annotations

import asyncio

from avatar.application.conversation.recorder import BUSY
from backend.tests.conversation.test_pipeline import Rig, tone
from backend.tests.conversation.test_spooled_writes import spoken_turn
from tests.fakes import FakeObjectStore


class SlowObjectStore(FakeObjectStore):
    """An object store whose writes wait until ``opened`` is set (a storage server that fell behind)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        await self.opened.wait()
        return await super().put(key, data, content_type)


async def test_a_session_whose_writes_fall_behind_takes_no_new_turn_until_they_drain() -> None:
    rig = Rig()
    slow = SlowObjectStore()
    rig.store = slow
    rig.deps.object_store = slow
    rig.deps.config.max_pending_writes = 3
    session = await rig.session()
    try:
        # turn 1 is answered; its audio upload waits, and the writes behind it wait too
        await session.push_audio(tone(1000))
        await rig.until(session, lambda m: m["type"] == "turn_completed")
        assert session.writer.pending >= 3
        queued = session.writer.pending
        rig.clock.advance(60.0)

        # turn 2 is not taken: the person is told, nothing of it is queued
        await session.push_audio(tone(1000))
        notice = await rig.until(session, lambda m: m["type"] == "notice" and m["code"] == BUSY)
        assert "still saving" in notice[-1]["message"] and "turn_id" not in notice[-1]
        assert [m["type"] for m in rig.messages].count("turn_started") == 1
        assert session.writer.pending <= queued
        assert rig.metrics.skipped_tasks == ["turn"]
        assert not [m for m in rig.messages if m["type"] == "error"]

        # storage catches up: everything of turn 1 lands, and the next turn is taken again
        slow.opened.set()
        await session.writer.drain()
        assert [t.turn_number for t in rig.db.tables.turns.values()] == [1]
        assert sum(k.startswith("raw_inputs/") for k in slow.objects) == 1
        await spoken_turn(rig, session)
        assert sorted(t.turn_number for t in rig.db.tables.turns.values()) == [1, 2]
        assert [m["type"] for m in rig.messages].count("turn_started") == 2
        assert session.writer.failed == 0
    finally:
        slow.opened.set()
        await session.aclose()
