"""Fair slots with real asyncio: round-robin between keys, first come first served within a key,
bounded waits, shedding, and a slot handed on when its waiter leaves. Orders are deterministic
(each waiter joins the line before the slot is released); nothing asserts on timings."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from avatar_common.fairness import FairSlots


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


class Recorder:
    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.gate = asyncio.Event()

    async def use(self, name: str, key: Hashable, timeout_s: float = 30.0) -> bool:
        if not await self.slots.acquire(timeout_s, key):
            return False
        self.order.append(name)
        await settle()  # hold the slot a moment, as an engine call would
        self.slots.release()
        return True


async def test_waiters_are_served_round_robin_between_keys_not_by_arrival() -> None:
    slots = FairSlots(1)
    assert await slots.acquire(1.0, "holder")
    rec = Recorder(slots)
    # A chatty session queues four requests before two others queue one each.
    names = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("a4", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b")]
    tasks = []
    for name, key in names:
        tasks.append(asyncio.create_task(rec.use(name, key)))
        await settle()
    assert slots.waiting == 7 and slots.waiting_for("a") == 4
    slots.release()
    assert all(await asyncio.gather(*tasks))
    assert rec.order == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert slots.in_use == 0 and slots.waiting == 0


async def test_one_key_is_served_first_come_first_served() -> None:
    slots = FairSlots(1)
    assert await slots.acquire(1.0)
    rec = Recorder(slots)
    tasks = [asyncio.create_task(rec.use(str(n), None)) for n in range(5)]
    await settle()
    slots.release()
    await asyncio.gather(*tasks)
    assert rec.order == ["0", "1", "2", "3", "4"]


async def test_a_wait_is_bounded_and_a_late_slot_goes_to_the_next() -> None:
    slots = FairSlots(1)
    assert await slots.acquire(1.0, "holder")
    assert await slots.acquire(0.01, "late") is False  # no slot came in time
    assert slots.waiting == 0 and slots.in_use == 1
    rec = Recorder(slots)
    quitter = asyncio.create_task(rec.use("quitter", "q"))
    patient = asyncio.create_task(rec.use("patient", "p"))
    await settle()
    quitter.cancel()  # a cancelled waiter leaves the line and takes no slot with it
    await asyncio.gather(quitter, return_exceptions=True)
    slots.release()
    assert await patient is True
    assert rec.order == ["patient"]
    assert slots.in_use == 0 and slots.waiting == 0


async def test_a_slot_handed_to_a_waiter_that_is_cancelled_passes_on() -> None:
    slots = FairSlots(1)
    assert await slots.acquire(1.0)
    rec = Recorder(slots)
    first = asyncio.create_task(rec.use("first", "a"))
    second = asyncio.create_task(rec.use("second", "b"))
    await settle()
    slots.release()  # the slot goes to `first`, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert await second is True
    assert rec.order == ["second"] and slots.in_use == 0


async def test_shed_sends_every_waiter_away_and_never_touches_the_holders() -> None:
    slots = FairSlots(2)
    assert await slots.acquire(1.0, "x") and await slots.acquire(1.0, "y")
    waiters = [asyncio.create_task(slots.acquire(30.0, key)) for key in ("a", "b", "a")]
    await settle()
    assert slots.shed() == 3
    assert await asyncio.gather(*waiters) == [False, False, False]
    assert slots.in_use == 2 and slots.waiting == 0
    slots.release()
    assert slots.in_use == 1
    assert await slots.acquire(0.0, "c")  # a free slot is taken at once, even with no wait allowed


async def test_unlimited_slots_never_wait_and_negative_sizes_are_refused() -> None:
    unlimited = FairSlots(0)
    assert all([await unlimited.acquire(0.0, n) for n in range(10)])
    assert unlimited.in_use == 0
    with pytest.raises(ValueError, match="slots"):
        FairSlots(-1)


async def test_per_key_cap_makes_a_sessions_second_request_wait_while_a_slot_is_free() -> None:
    slots = FairSlots(2, per_key=1)
    assert await slots.acquire(1.0, "a")
    second_of_a = asyncio.create_task(slots.acquire(30.0, "a"))
    await settle()
    assert not second_of_a.done() and slots.waiting_for("a") == 1
    # The free slot goes to another session at once, not to a's second request.
    assert await slots.acquire(1.0, "b")
    assert slots.in_use == 2 and slots.held_by("a") == 1 and slots.held_by("b") == 1
    slots.release("b")
    await settle()
    assert not second_of_a.done()  # a still holds its one slot
    slots.release("a")
    assert await second_of_a
    assert slots.held_by("a") == 1 and slots.in_use == 1
    slots.release("a")
    assert slots.in_use == 0 and slots.held_by("a") == 0


async def test_per_key_cap_serves_sessions_round_robin_and_never_two_at_once() -> None:
    slots = FairSlots(2, per_key=1)
    assert await slots.acquire(1.0, "x")
    assert await slots.acquire(1.0, "y")
    order: list[str] = []
    most_held: dict[str, int] = {}

    async def use(name: str, key: str) -> None:
        assert await slots.acquire(30.0, key)
        order.append(name)
        most_held[key] = max(most_held.get(key, 0), slots.held_by(key))
        await settle()
        slots.release(key)

    names = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b")]
    tasks = []
    for name, key in names:
        tasks.append(asyncio.create_task(use(name, key)))
        await settle()
    slots.release("x")
    slots.release("y")
    await asyncio.gather(*tasks)
    assert order[:2] == ["a1", "b1"]
    assert sorted(order) == sorted(n for n, _ in names)
    assert order.index("a2") < order.index("a3") and order.index("b1") < order.index("b2")
    assert most_held == {"a": 1, "b": 1, "c": 1}
    assert slots.in_use == 0 and slots.waiting == 0


async def test_per_key_cap_leaves_callers_without_a_session_uncapped() -> None:
    slots = FairSlots(2, per_key=1)
    assert await slots.acquire(1.0, None)
    assert await slots.acquire(1.0, None)
    assert slots.in_use == 2
    slots.release(None)
    slots.release(None)
    assert slots.in_use == 0


def test_releasing_a_slot_the_key_does_not_hold_is_an_error() -> None:
    slots = FairSlots(1, per_key=1)
    with pytest.raises(RuntimeError):
        slots.release("nobody")
