"""Admission follows the chat model (docs/resilience.md, "Admission follows the model"): the
default live-session limit is what the model's slots answer within the bounded wait; every
admitted session is answered and the next one is refused with a time to retry. Over a real
uvicorn server and real WebSocket clients."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from pydantic import SecretStr

from avatar.application.conversation.admission import sessions_the_model_can_answer
from avatar.bench.live import auth
from avatar.presentation.app import create_app
from avatar.settings import UNBOUND_MODEL_SESSIONS, Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, server_key
from tests.fakes import fake_container


@pytest.mark.parametrize(
    ("slots", "queue_timeout_s", "reply_s", "sessions"),
    [
        (1, 20.0, 7.0, 3),  # the embedded default: two replies ahead of the third fit in 20 s
        (1, 20.0, 5.0, 5),
        (2, 20.0, 7.0, 5),
        (1, 5.0, 7.0, 1),  # a reply longer than the wait: nobody may wait behind another
        (3, 1.0, 0.5, 7),
    ],
)
def test_sessions_the_model_can_answer(
    slots: int, queue_timeout_s: float, reply_s: float, sessions: int
) -> None:
    assert sessions_the_model_can_answer(slots, queue_timeout_s, reply_s) == sessions
    # the last admitted session's request waits behind every other one: still within the wait
    ahead = sessions - 1
    assert -(-ahead // slots) * reply_s <= queue_timeout_s
    # one more session could wait past it
    assert -(-(ahead + 1) // slots) * reply_s > queue_timeout_s


@pytest.mark.parametrize(
    ("slots", "queue_timeout_s", "reply_s"), [(0, 20.0, 7.0), (1, 0.0, 7.0), (1, 20.0, 0.0)]
)
def test_sessions_the_model_can_answer_refuses_nonsense(
    slots: int, queue_timeout_s: float, reply_s: float
) -> None:
    with pytest.raises(ValueError):
        sessions_the_model_can_answer(slots, queue_timeout_s, reply_s)


def test_the_live_session_limit_comes_from_the_model_unless_set() -> None:
    settings = Settings(environment="test")
    assert settings.conversation.max_sessions == 0
    assert settings.live_session_limit() == 3  # embedded: 1 slot, 20 s wait, 7 s a reply
    settings.llm.queue_timeout_s = 40.0
    assert settings.live_session_limit() == 6
    settings.llm.placement = Placement.REMOTE
    assert settings.live_session_limit() == UNBOUND_MODEL_SESSIONS  # no slot limit: not the bound
    settings.llm.slots = 4
    assert settings.live_session_limit() == 4 * 5 + 1
    settings.conversation.max_sessions = 9
    assert settings.live_session_limit() == 9  # an operator's explicit limit wins


async def test_every_admitted_session_is_answered_and_the_next_is_told_when_to_retry() -> None:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr("admission-sized-secret")
    settings.conversation.max_sessions_per_user = 10
    settings.conversation.busy_retry_after_s = 4
    settings.llm.queue_timeout_s = 30.0
    settings.llm.reply_budget_s = 15.0  # 1 slot: two replies fit in the wait, so 3 sessions
    assert settings.live_session_limit() == 3
    app = create_app(settings, fake_container(settings))
    async with running_server(app) as base:
        created = [await create_session(base) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(Client.connect(c["ws_url"])) for c in created]
            for client in opened:
                await client.until_type("session_state")
            for n, client in enumerate(opened):
                await client.send({"type": "text_input", "text": f"hello {n}"})
            for client in opened:
                await client.until_type("turn_completed")
                assert not client.of("error")
                assert not [m for m in client.of("notice") if m["code"] == "BUSY"]
            async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as http:
                refused = await http.post("/api/v1/sessions")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "BUSY"
            assert refused.headers["Retry-After"] == "4"
            assert "3 live sessions" in refused.json()["error"]["message"]
