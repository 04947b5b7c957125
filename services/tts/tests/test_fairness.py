"""Many conversations on one synthesizer, with the real packaged Piper voice: clauses take turns
round-robin between sessions (not first come, first served by request), and a clause that gets no
slot in time fails ``BUSY`` instead of hanging or being dropped. The slot is held by the test
itself while the line forms, so the order is deterministic; nothing asserts on timings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest
import pytest_asyncio

from avatar_tts.errors import BusyError
from avatar_tts.service import TTSService, Utterance

from .conftest import packaged_config


@pytest_asyncio.fixture(scope="module")
async def one_slot() -> AsyncIterator[TTSService]:
    """A service of its own with one synthesis slot (closing it unloads its engines)."""
    service = TTSService(packaged_config(max_concurrency=1, queue_timeout_s=60.0))
    await service.start()
    yield service
    await service.aclose()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def listen(utt: Utterance) -> np.ndarray:
    try:
        return await utt.read_all()
    finally:
        await utt.aclose()


async def test_clauses_of_many_sessions_are_spoken_round_robin(one_slot: TTSService) -> None:
    assert await one_slot.slots.acquire(1.0, "someone else")
    requests = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")]
    utterances: dict[str, Utterance] = {}
    for name, key in requests:
        utterances[name] = await one_slot.synthesize("It is a fine day.", key=key)
        await settle()  # each clause joins the line before the next request comes
    assert one_slot.slots.waiting == 5
    one_slot.slots.release()
    audio = await asyncio.gather(*(listen(u) for u in utterances.values()))
    assert all(a.size > 22050 // 2 and float(np.abs(a).max()) > 0.1 for a in audio)  # real speech
    spoken = sorted(utterances, key=lambda name: utterances[name].first_audio_at or float("inf"))
    # Session a asked three times first; b and c are not kept waiting behind all of a's clauses.
    assert spoken == ["a1", "b1", "c1", "a2", "a3"]
    assert one_slot.slots.in_use == 0 and one_slot.slots.waiting == 0


async def test_a_clause_that_gets_no_slot_in_time_is_busy(one_slot: TTSService) -> None:
    patient = one_slot.config
    one_slot.config = replace(patient, queue_timeout_s=0.05)
    try:
        assert await one_slot.slots.acquire(1.0, "someone else")
        utt = await one_slot.synthesize("Nobody will hear this in time.", key="late")
        with pytest.raises(BusyError) as busy:
            await listen(utt)
        assert busy.value.code == "BUSY" and busy.value.status == 503
        assert "busy with other conversations" in busy.value.message
        assert one_slot.slots.in_use == 1  # the holder was never cancelled for the waiter
        one_slot.slots.release()
        spoken = await listen(await one_slot.synthesize("Now there is room.", key="late"))
        assert spoken.size > 0 and float(np.abs(spoken).max()) > 0.1
        assert one_slot.slots.in_use == 0
    finally:
        one_slot.config = patient
