"""The recognizer's inference queue with real asyncio and real worker threads (jobs are plain
functions, so no model is needed): round-robin between streams, finals before partials, partials
shed first, bounded waits answered ``BUSY``, withdrawn jobs skipped. Deterministic: each job is
queued before the slot it waits for frees up, and nothing asserts on timings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future

import pytest
import pytest_asyncio

from avatar_asr.engine import PRIORITY_FINAL, PRIORITY_PARTIAL, InferenceQueue
from avatar_asr.errors import ASRError, BusyError


class Gate:
    """A job that holds its slot until opened; ``started`` tells it got the slot."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        self.opened.wait(30)
        return "gate"

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 30)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def recording(order: list[str], name: str) -> Callable[[], str]:
    def job() -> str:
        order.append(name)
        return name

    return job


async def result(future: Future[str]) -> str:
    return await asyncio.wrap_future(future)


@pytest_asyncio.fixture
async def queue() -> AsyncIterator[InferenceQueue]:
    q = InferenceQueue(workers=1, max_pending=16, final_wait_s=30.0, partial_wait_s=30.0)
    yield q
    q.close()


async def test_finals_of_many_streams_are_served_round_robin(queue: InferenceQueue) -> None:
    gate = Gate()
    held = queue.submit(gate, PRIORITY_FINAL, "someone")
    await gate.running()
    order: list[str] = []
    jobs = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")]
    futures = [queue.submit(recording(order, name), PRIORITY_FINAL, key) for name, key in jobs]
    await settle()
    assert queue.waiting(PRIORITY_FINAL) == 5
    gate.opened.set()
    assert await result(held) == "gate"
    assert [await result(f) for f in futures] == [name for name, _ in jobs]
    # A stream with three utterances in line does not make the others wait behind all of them.
    assert order == ["a1", "b1", "c1", "a2", "a3"]
    assert queue.pending == 0


async def test_a_final_that_waits_too_long_is_busy_and_tells_why() -> None:
    queue = InferenceQueue(workers=1, max_pending=16, final_wait_s=0.05)
    gate = Gate()
    try:
        held = queue.submit(gate, PRIORITY_FINAL, "a")
        await gate.running()
        with pytest.raises(BusyError) as busy:
            await result(queue.submit(lambda: "late", PRIORITY_FINAL, "b"))
        assert busy.value.code == "BUSY" and busy.value.status == 503
        assert "say it again" in busy.value.message
        assert queue.timed_out == 1
        gate.opened.set()
        assert await result(held) == "gate"  # the holder was never cancelled for the waiter
        assert await result(queue.submit(lambda: "next", PRIORITY_FINAL, "b")) == "next"
    finally:
        gate.opened.set()
        queue.close()


async def test_a_final_never_waits_behind_a_running_partial(queue: InferenceQueue) -> None:
    gate = Gate()
    partial = queue.submit(gate, PRIORITY_PARTIAL, "a")
    await gate.running()
    assert await result(queue.submit(lambda: "final", PRIORITY_FINAL, "b")) == "final"
    assert not partial.done()
    gate.opened.set()
    assert await result(partial) == "gate"


async def test_idle_says_whether_a_job_of_the_lane_would_start_at_once(queue: InferenceQueue) -> None:
    assert queue.idle(PRIORITY_FINAL) and queue.idle(PRIORITY_PARTIAL)
    gate = Gate()
    running = queue.submit(gate, PRIORITY_FINAL, "a")
    await gate.running()
    assert not queue.idle(PRIORITY_FINAL)  # the one final slot is taken
    assert queue.idle(PRIORITY_PARTIAL)  # the partials' lane is its own
    gate.opened.set()
    assert await result(running) == "gate"
    await settle()
    assert queue.idle(PRIORITY_FINAL)


async def test_partials_are_shed_first_when_finals_must_wait(queue: InferenceQueue) -> None:
    final_gate, partial_gate = Gate(), Gate()
    running_final = queue.submit(final_gate, PRIORITY_FINAL, "a")
    running_partial = queue.submit(partial_gate, PRIORITY_PARTIAL, "a")
    await final_gate.running()
    await partial_gate.running()
    waiting_partial = queue.submit(lambda: "stale", PRIORITY_PARTIAL, "b")
    await settle()
    assert queue.waiting(PRIORITY_PARTIAL) == 1
    # A final that has to wait sends the waiting partials away at once ...
    waiting_final = queue.submit(lambda: "final", PRIORITY_FINAL, "b")
    with pytest.raises(BusyError):
        await result(waiting_partial)
    await settle()
    # ... and no new partial is let in while it waits.
    with pytest.raises(BusyError):
        queue.submit(lambda: "refused", PRIORITY_PARTIAL, "c")
    assert queue.partials_shed == 2
    final_gate.opened.set()
    partial_gate.opened.set()
    assert await result(waiting_final) == "final"
    assert await result(running_final) == "gate" and await result(running_partial) == "gate"
    # Running partials are never cancelled; once the finals are served, partials are welcome again.
    assert await result(queue.submit(lambda: "again", PRIORITY_PARTIAL, "c")) == "again"


async def test_a_full_queue_refuses_at_once_and_partials_hold_at_most_half() -> None:
    queue = InferenceQueue(workers=1, max_pending=4, final_wait_s=30.0, partial_wait_s=30.0)
    gate = Gate()
    try:
        partials = [
            queue.submit(gate, PRIORITY_PARTIAL, "a"),
            queue.submit(lambda: "p", PRIORITY_PARTIAL, "b"),
        ]
        with pytest.raises(BusyError):
            queue.submit(lambda: "third partial", PRIORITY_PARTIAL, "c")
        finals = [queue.submit(lambda: "f", PRIORITY_FINAL, k) for k in ("a", "b")]
        with pytest.raises(BusyError):
            queue.submit(lambda: "fifth", PRIORITY_FINAL, "c")
        assert [await result(f) for f in finals] == ["f", "f"]
        gate.opened.set()
        assert [await result(p) for p in partials] == ["gate", "p"]
    finally:
        gate.opened.set()
        queue.close()


async def test_a_withdrawn_job_never_runs_and_its_turn_passes_on(queue: InferenceQueue) -> None:
    gate = Gate()
    held = queue.submit(gate, PRIORITY_FINAL, "a")
    await gate.running()
    order: list[str] = []
    withdrawn = queue.submit(recording(order, "withdrawn"), PRIORITY_FINAL, "b")
    kept = queue.submit(recording(order, "kept"), PRIORITY_FINAL, "c")
    await settle()
    assert withdrawn.cancel()
    await settle()
    gate.opened.set()
    assert await result(held) == "gate" and await result(kept) == "kept"
    assert order == ["kept"] and queue.pending == 0


async def test_a_closed_queue_refuses_new_jobs() -> None:
    queue = InferenceQueue(workers=1, max_pending=4)
    assert await result(queue.submit(lambda: "ok", PRIORITY_FINAL)) == "ok"
    queue.close()
    with pytest.raises(ASRError) as refused:
        queue.submit(lambda: "late", PRIORITY_FINAL)
    assert refused.value.code == "SHUTTING_DOWN"
