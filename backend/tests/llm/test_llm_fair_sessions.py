"""The chat adapter's slots keyed by session, against a real local HTTP server that holds every
request until the test lets it answer: sessions are served round-robin, one request of a session
at the model at once, and a session's own requests in arrival order. Orders are deterministic
(the test waits for each state before the next step); nothing asserts on timings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from avatar.application.ports.llm import ChatMessage
from avatar.infrastructure.llama_server import free_port
from avatar.infrastructure.llm import OpenAIChatModel


@dataclass
class HeldServer:
    """A raw HTTP/1.1 chat server: each request (named by its user message) waits until the test
    calls :meth:`answer` with its name, then streams a short reply."""

    port: int = 0
    arrived: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def answer(self, name: str) -> None:
        self.gate(name).set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(":")[1])
                for line in head.decode().split("\r\n")
                if line.lower().startswith("content-length:")
            )
            body = json.loads(await reader.readexactly(length))
            name = str(body["messages"][-1]["content"])
            self.arrived.append(name)
            await self.gate(name).wait()
            events = [{"choices": [{"index": 0, "delta": {"content": f"reply to {name}"}}]}]
            payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload.encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def held() -> AsyncIterator[HeldServer]:
    server = HeldServer(port=free_port())
    listener = await asyncio.start_server(server.handle, "127.0.0.1", server.port)
    try:
        yield server
    finally:
        for gate in server.gates.values():
            gate.set()
        listener.close()
        await listener.wait_closed()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a deadlock guard of 30 s, not a timing assertion)."""
    async with asyncio.timeout(30.0):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def ask(model: OpenAIChatModel, name: str, session: uuid.UUID) -> str:
    stream = model.stream_chat([ChatMessage("user", name)], session=session)
    return "".join([t async for t in stream])


async def test_sessions_are_served_round_robin_not_by_arrival(held: HeldServer) -> None:
    model = OpenAIChatModel(f"http://127.0.0.1:{held.port}", "m", slots=1, queue_timeout_s=60.0)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        tasks = {"a1": asyncio.create_task(ask(model, "a1", a))}
        await until(lambda: held.arrived == ["a1"])
        # Session a queues two more requests before b and c queue one each.
        for waiting, (name, session) in enumerate([("a2", a), ("a3", a), ("b1", b), ("c1", c)], 1):
            tasks[name] = asyncio.create_task(ask(model, name, session))
            await until(lambda n=waiting: model.slots.waiting == n)  # type: ignore[misc]
        for served in range(1, 6):
            await until(lambda s=served: len(held.arrived) == s)  # type: ignore[misc]
            assert model.slots.in_use == 1  # one request at the model at once
            held.answer(held.arrived[-1])
        replies = {name: await task for name, task in tasks.items()}
    finally:
        await model.aclose()
    assert held.arrived == ["a1", "b1", "c1", "a2", "a3"]
    assert replies == {name: f"reply to {name}" for name in replies}
    assert model.slots.in_use == 0 and model.slots.waiting == 0


async def test_a_sessions_second_request_waits_while_another_session_takes_the_free_slot(
    held: HeldServer,
) -> None:
    model = OpenAIChatModel(f"http://127.0.0.1:{held.port}", "m", slots=2, queue_timeout_s=60.0)
    a, b = uuid.uuid4(), uuid.uuid4()
    try:
        first = asyncio.create_task(ask(model, "a-reply", a))
        await until(lambda: held.arrived == ["a-reply"])
        second = asyncio.create_task(ask(model, "a-summary", a))
        await until(lambda: model.slots.waiting_for(a) == 1)
        other = asyncio.create_task(ask(model, "b-reply", b))
        await until(lambda: held.arrived == ["a-reply", "b-reply"])
        assert model.slots.held_by(a) == 1 and model.slots.waiting_for(a) == 1
        held.answer("b-reply")
        assert await other == "reply to b-reply"
        assert held.arrived == ["a-reply", "b-reply"]  # a free slot, but a already has one
        held.answer("a-reply")
        assert await first == "reply to a-reply"
        await until(lambda: held.arrived[-1:] == ["a-summary"])
        held.answer("a-summary")
        assert await second == "reply to a-summary"
    finally:
        await model.aclose()
    assert model.slots.in_use == 0 and model.slots.held_by(a) == 0


async def test_chat_completions_callers_take_turns_like_sessions(held: HeldServer) -> None:
    """``/v1/chat/completions`` (``OpenAIChat``) keys its requests by the caller: a client that
    queues many requests cannot keep another caller or a live session waiting behind all of them."""
    from avatar.application.brain import load_persona
    from avatar.application.openai_compat.chat import ChatOrder, OpenAIChat
    from avatar.bootstrap import brain_config, build_instant_container
    from avatar.domain.models import User
    from avatar.settings import Settings

    settings = Settings(environment="test")
    container = build_instant_container(settings)
    model = OpenAIChatModel(f"http://127.0.0.1:{held.port}", "m", slots=1, queue_timeout_s=60.0)
    chat = OpenAIChat(
        model,
        container.text_embedder,
        container.uow,
        load_persona(settings.llm.persona_file),
        brain_config(settings),
        avatar_model="avatar",
        base_model="m",
    )
    busy, other = User(uuid.uuid4(), "busy"), User(uuid.uuid4(), "other")

    async def complete(name: str, caller: User) -> str:
        reply = await chat.start(ChatOrder("m", (ChatMessage("user", name),)), caller)
        assert reply.caller == caller.user_id
        return "".join([t async for t in chat.deltas(reply)])

    try:
        tasks = {"busy1": asyncio.create_task(complete("busy1", busy))}
        await until(lambda: held.arrived == ["busy1"])
        for waiting, (name, caller) in enumerate([("busy2", busy), ("busy3", busy), ("other1", other)], 1):
            tasks[name] = asyncio.create_task(complete(name, caller))
            await until(lambda n=waiting: model.slots.waiting == n)  # type: ignore[misc]
        session = uuid.uuid4()
        tasks["session1"] = asyncio.create_task(ask(model, "session1", session))
        await until(lambda: model.slots.waiting == 4)
        for served in range(1, 6):
            await until(lambda s=served: len(held.arrived) == s)  # type: ignore[misc]
            held.answer(held.arrived[-1])
        replies = {name: await task for name, task in tasks.items()}
    finally:
        await model.aclose()
        await container.aclose()
    # the busy caller's second and third requests wait behind the other caller and the session
    assert held.arrived == ["busy1", "other1", "session1", "busy2", "busy3"]
    assert replies == {name: f"reply to {name}" for name in replies}
