"""The benchmark client's way through the server's real admission (avatar.bench.admission): over a
real uvicorn server with one live slot, a refused session waits what the refusal says, asks again
and is let in once the slot is free; one that stays refused gives up; a WebSocket refused for want
of a slot names its wait too. Waits are kept short by the policy; nothing here asserts a duration."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import httpx
import pytest
from pydantic import SecretStr

from avatar.bench import live
from avatar.bench.admission import (
    Admission,
    AdmissionRetry,
    NotAdmittedError,
    admitted,
    attach,
    close_retry_s,
    retry_after_s,
)
from avatar.bench.conversation import CrowdLevel, Tally, _crowd_section, _speak_and_wait
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import create_session, running_server, server_key
from tests.fakes import fake_container

QUICK = AdmissionRetry(max_wait_s=0.2, give_up_s=60.0)


def _one_slot() -> Settings:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr("bench-admission-secret")
    settings.conversation.max_sessions = 1
    settings.conversation.busy_retry_after_s = 7  # longer than max_wait_s: the cap applies
    return settings


async def test_a_refused_session_waits_and_is_admitted_when_the_slot_frees() -> None:
    settings = _one_slot()
    async with running_server(create_app(settings, fake_container(settings))) as base:
        key = await server_key(base)
        first, second = Admission(), Admission()
        holder_in, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with admitted(base, key, first, QUICK):
                holder_in.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.wait_for(holder_in.wait(), 30)

        async def wait_in() -> str:
            async with admitted(base, key, second, QUICK) as client:
                await client.send({"type": "text_input", "text": "hello"})
                done = await client.until_type("turn_completed", 30)
                return str(done["text"])

        waiting = asyncio.create_task(wait_in())
        for _ in range(1200):  # refused, waited, refused again: it keeps asking
            if second.refusals >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the waiting session stopped asking: {second}")
        let_in_early = second.admitted
        assert not let_in_early and not waiting.done()
        release.set()
        await asyncio.wait_for(holder, 30)
        assert await asyncio.wait_for(waiting, 60)  # admitted, and answered
        assert first.refusals == 0 and first.admitted
        assert second.admitted and second.refusals >= 2 and second.wait_s > 0


async def test_a_session_refused_past_the_give_up_time_is_not_admitted() -> None:
    settings = _one_slot()
    async with running_server(create_app(settings, fake_container(settings))) as base:
        key = await server_key(base)
        holding, refused = Admission(), Admission()
        async with admitted(base, key, holding, QUICK):
            with pytest.raises(NotAdmittedError, match="not admitted"):
                async with admitted(base, key, refused, AdmissionRetry(max_wait_s=0.1, give_up_s=0.3)):
                    pytest.fail("admitted past the live-session limit")
        assert refused.refusals >= 1 and not refused.admitted


async def test_a_websocket_refused_for_want_of_a_slot_names_its_wait() -> None:
    settings = _one_slot()
    async with running_server(create_app(settings, fake_container(settings))) as base:
        late = await create_session(base)  # created while the slot is free ...
        async with admitted(base, await server_key(base), Admission(), QUICK):  # ... taken here
            async with contextlib.AsyncExitStack() as stack:
                assert await attach(late["ws_url"], stack) == 7.0


async def test_refusals_are_read_from_the_documented_answers() -> None:
    busy = httpx.Response(
        503, headers={"Retry-After": "5"}, json={"error": {"code": "BUSY", "message": "full"}}
    )
    draining = httpx.Response(503, json={"error": {"code": "DRAINING", "message": "bye"}})
    assert retry_after_s(busy) == 5.0
    assert retry_after_s(draining) is None
    assert retry_after_s(httpx.Response(500, json={})) is None
    assert close_retry_s("busy; retry after 3 s") == 3.0
    assert close_retry_s("busy") is None


def test_the_crowd_table_reports_refusals_and_the_admission_wait() -> None:
    tally = Tally(
        admissions=[
            Admission(0, 0.0, True),
            Admission(2, 4.0, True),
            Admission(1, 2.0, True),
            Admission(9, 300.0, False),
        ]
    )
    level = CrowdLevel(sessions=4, tally=tally, utterances=8, fallbacks=frozenset())
    assert level.refused_at_first == 3
    assert level.admission_wait_p50_s == 2.0  # over the admitted sessions only
    section = _crowd_section([level], turns=2, note="")
    header = next(line for line in section.splitlines() if line.startswith("| sessions"))
    assert header.split(" | ")[-2:] == ["refused at first", "admission wait P50 |"]
    row = next(line for line in section.splitlines() if line.startswith("| 4 |"))
    assert row.split(" | ")[-2:] == ["3", "2.0 |"]


class ScriptedClient:
    """Stands in for the protocol client: answers ``recv`` from a script, takes any audio."""

    def __init__(self, script: list[dict[str, object]]) -> None:
        self.script = script

    async def send_audio(self, pcm: bytes, sr: int = 16000, timestamp: float = 0.0) -> None:
        pass

    async def recv(self) -> dict[str, object]:
        if not self.script:
            await asyncio.Event().wait()  # the server has nothing more to say
        return self.script.pop(0)


async def test_a_notice_about_an_earlier_turn_is_not_counted_against_this_one() -> None:
    # The prosody analysis of the previous turn was skipped (notice BUSY with that turn's id): the
    # reply of this turn is still the model's own, not one told BUSY.
    client = ScriptedClient(
        [
            {"type": "notice", "code": "BUSY", "message": "prosody skipped", "turn_id": "earlier"},
            {"type": "transcription_final", "text": "hello"},
            {"type": "turn_started", "turn_id": "this"},
            {"type": "notice", "code": "AUDIO_SHED", "message": "slow", "turn_id": "this"},
            {"type": "audio_chunk", "turn_id": "this", "duration_ms": 10},
            {"type": "turn_completed", "turn_id": "this", "latency_ms": {}, "text": "Hi!"},
        ]
    )
    result = await _speak_and_wait(cast(live.Client, client), bytes(3200), 30)
    assert result.notices == ("AUDIO_SHED",)
    level = CrowdLevel(sessions=1, tally=Tally(turns=[result]), utterances=1, fallbacks=frozenset())
    assert level.real_replies == 1 and level.busy == 0
