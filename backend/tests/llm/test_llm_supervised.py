"""The embedded llama.cpp server under its supervisor, with the real SmolLM2 model: killed, it is
restarted; meanwhile health and the breaker agree that it is down; once it is back the very next
request is a real reply (no waiting out the breaker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModelError
from avatar.infrastructure.llm import OpenAIChatModel, build_chat_model
from avatar.settings import Placement, Settings

pytestmark = pytest.mark.slow

HELLO = [ChatMessage("user", "Say hello.")]


async def test_a_killed_embedded_server_is_restarted_and_served_again_at_once() -> None:
    settings = Settings(environment="test")
    settings.llm.placement = Placement.EMBEDDED
    settings.llm.port = 0
    settings.llm.n_ctx = 2048
    settings.llm.max_retries = 1
    settings.llm.embedded_servers = 1
    async with contextlib.AsyncExitStack() as stack:
        model = await build_chat_model(settings, stack)
        assert isinstance(model, OpenAIChatModel) and model.slots.size == 1
        # one slot for every session: a prompt computed again must not look like an outage
        assert model._first_token_timeout_s == settings.llm.embedded_first_token_timeout_s == 20.0
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8)]
        started = time.monotonic()
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8)]
        normal_s = time.monotonic() - started  # a warm request on this machine right now
        health = await model.health()
        process = health.extra["process"]
        assert health.ok and isinstance(process, dict) and process["state"] == "running"
        before = REGISTRY.get_sample_value("supervised_restarts_total", {"child": "llm"}) or 0.0

        os.kill(int(process["pid"]), signal.SIGKILL)
        await asyncio.sleep(0.05)
        down = await model.health()
        assert not down.ok and down.extra["breaker"] == "open"  # health and breaker agree
        with pytest.raises(ChatModelError) as failed:
            [t async for t in model.stream_chat(HELLO, max_tokens=8)]
        assert failed.value.kind in {ChatErrorKind.REFUSED, ChatErrorKind.CIRCUIT_OPEN}
        assert failed.value.code == "LLM_UNAVAILABLE"

        async with asyncio.timeout(120):  # the model loads again
            while True:
                up = await model.health()
                again = up.extra["process"]
                if isinstance(again, dict) and again["state"] == "running" and again["restarts"] == 1:
                    break
                await asyncio.sleep(0.05)
        back_at = time.monotonic()
        tokens = [t async for t in model.stream_chat(HELLO, max_tokens=8)]
        assert tokens and "".join(tokens).strip()
        # 5 s on an idle machine; a loaded test machine is allowed twice a normal request there
        assert time.monotonic() - back_at < max(5.0, 2 * normal_s)
        assert model.breaker.closed
        after = await model.health()
        assert after.ok and after.extra["breaker"] == "closed"
        assert isinstance(after.extra["process"], dict) and after.extra["process"]["restarts"] == 1
        assert after.extra["process"]["pid"] != process["pid"]
        assert "signal 9" in str(after.extra["process"]["last_error"])
        assert REGISTRY.get_sample_value("supervised_restarts_total", {"child": "llm"}) == before + 1


def started(model: OpenAIChatModel) -> int:
    return len(model.servers.active)


async def test_a_session_whose_server_dies_is_answered_by_another_at_once() -> None:
    """Up to two servers: one at start, the second once a second session needs it; then each
    session has its own. The server of one is killed: that session's next request goes to the
    other server and is a real reply (no error, the breaker stays closed, health says which part is
    down); the other session never notices."""
    settings = Settings(environment="test")
    settings.llm.placement = Placement.EMBEDDED
    settings.llm.port = 0
    settings.llm.n_ctx = 2048
    settings.llm.embedded_servers = 2
    first, second = uuid.uuid4(), uuid.uuid4()
    async with contextlib.AsyncExitStack() as stack:
        model = await build_chat_model(settings, stack)
        assert isinstance(model, OpenAIChatModel) and len(model.servers) == 2
        assert started(model) == 1  # the second starts only when a session needs it
        assert model.slots.size == 1  # replies still take turns on the CPU
        for _ in range(2):
            assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=first)]
        assert started(model) == 1  # one conversation, one server
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=second)]
        async with asyncio.timeout(120):  # the second conversation asked for a second server
            while True:
                if started(model) == 2:
                    break
                await asyncio.sleep(0.05)
        for session in (first, second):
            assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=session)]
        server_a, server_b = model.servers.server_of(first), model.servers.server_of(second)
        assert server_a is not None and server_b is not None and server_a != server_b
        # each session keeps its server (the one holding its prompt)
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=first)]
        assert model.servers.server_of(first) == server_a
        health = await model.health()
        process = health.extra["process"]
        assert health.ok and isinstance(process, dict) and process["state"] == "running"
        pids = process["pids"]
        assert isinstance(pids, list) and len(set(pids)) == 2
        refused_before = REGISTRY.get_sample_value("llm_errors_total", {"kind": "refused"}) or 0.0

        os.kill(int(pids[model.servers.urls.index(server_a)]), signal.SIGKILL)
        await asyncio.sleep(0.05)
        down = await model.health()
        assert not down.ok and "1 of 2 servers unreachable" in down.detail
        assert down.extra["breaker"] == "closed"  # the model as a whole still answers

        tokens = [t async for t in model.stream_chat(HELLO, max_tokens=8, session=first)]
        assert tokens and "".join(tokens).strip()
        assert model.servers.server_of(first) == server_b
        assert model.breaker.closed
        refused = REGISTRY.get_sample_value("llm_errors_total", {"kind": "refused"}) or 0.0
        assert refused == refused_before + 1  # counted, but the breaker was not told
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=second)]

        async with asyncio.timeout(120):  # the killed one is restarted
            while True:
                up = await model.health()
                again = up.extra["process"]
                if up.ok and isinstance(again, dict) and again["restarts"] == 1:
                    break
                await asyncio.sleep(0.05)
        assert isinstance(again, dict) and "signal 9" in str(again["last_error"])
        assert (REGISTRY.get_sample_value("supervised_restarts_total", {"child": "llm-1"}) or 0.0) + (
            REGISTRY.get_sample_value("supervised_restarts_total", {"child": "llm-2"}) or 0.0
        ) >= 1
        # the restarted server is up for sessions again: the one that moved away goes back to it
        # when the other session claims the server they shared
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=second)]
        assert [t async for t in model.stream_chat(HELLO, max_tokens=8, session=first)]
        assert model.servers.server_of(first) == server_a
