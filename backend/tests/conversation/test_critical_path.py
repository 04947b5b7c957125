"""Background work yields to replies on their critical path (docs/adr/0014-voice-latency.md): a
queue handler wrapped by :meth:`CriticalPath.yielding` waits while a reply has no audio out yet,
runs once it has, and never waits past its bound."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from avatar.application.critical_path import CriticalPath
from backend.tests.conversation.test_pipeline import Rig, is_type, tone


async def test_clear_returns_at_once_when_no_reply_is_in_flight() -> None:
    path = CriticalPath()
    await asyncio.wait_for(path.clear(), 1)
    assert path.deferred == 0


async def test_a_wrapped_handler_waits_for_the_reply_to_leave_the_path() -> None:
    path = CriticalPath(max_wait_s=60)
    ran: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload)

    path.enter()
    path.enter()  # two sessions' replies
    job = asyncio.ensure_future(path.yielding(handler)({"n": 1}))
    await asyncio.sleep(0.05)
    assert ran == [] and not job.done()
    path.leave()
    await asyncio.sleep(0.05)
    assert ran == [], "one reply is still waiting for its first audio"
    path.leave()
    await asyncio.wait_for(job, 5)
    assert ran == [{"n": 1}] and path.deferred == 1 and path.waits_expired == 0


async def test_background_work_is_never_starved_by_a_stuck_reply() -> None:
    path = CriticalPath(max_wait_s=0.05)
    ran: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(1)

    path.enter()  # and never leaves
    await asyncio.wait_for(path.yielding(handler)({}), 5)
    assert ran == [1] and path.waits_expired == 1


def test_leave_without_enter_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        CriticalPath().leave()


def _rig_with(path: CriticalPath, **kwargs: Any) -> Rig:
    rig = Rig(**kwargs)
    rig.deps = replace(rig.deps, critical_path=path)
    return rig


async def test_a_reply_is_on_the_path_until_its_first_audio() -> None:
    path = CriticalPath(max_wait_s=60)
    rig = _rig_with(path, token_delay_s=0.02)
    session = await rig.session()
    seen: list[tuple[str, int]] = []
    await session.push_audio(tone(1000))

    def note(message: dict[str, Any]) -> bool:
        seen.append((message["type"], path.active))
        return bool(message["type"] == "turn_completed")

    await rig.until(session, note)
    active = dict(seen)
    assert active["turn_started"] == 1  # the reply began: background work waits
    first_audio = next(i for i, (kind, _) in enumerate(seen) if kind == "audio_chunk")
    assert all(n == 0 for _, n in seen[first_audio:])  # from the first audio on it may run
    assert path.active == 0
    await session.aclose()


async def test_a_reply_that_fails_before_any_audio_leaves_the_path() -> None:
    path = CriticalPath(max_wait_s=60)
    rig = _rig_with(path, replies=("",))
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("turn_completed"))
    await asyncio.wait_for(session.aclose(), 20)
    assert path.active == 0
