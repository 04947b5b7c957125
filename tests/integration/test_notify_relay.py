"""The Redis client-event relay (infrastructure/notify.py) on a real Redis: delivery to the
replica holding the socket, claims, a malformed envelope, and Redis unreachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from avatar.application.conversation.events import NoticeMsg, ServerMessage
from avatar.infrastructure.notify import RedisNotificationRelay
from avatar.infrastructure.queue import redis_client
from tests.support.net import free_port


class Sessions:
    """This process's sessions as the relay sees them (connected, parked) and what reached them."""

    def __init__(self, connected: set[uuid.UUID] | None = None, parked: set[uuid.UUID] | None = None) -> None:
        self.connected = connected or set()
        self.parked = parked or set()
        self.delivered: list[tuple[uuid.UUID, str]] = []
        self.released: list[uuid.UUID] = []

    def holds_connection(self, session_id: uuid.UUID) -> bool:
        return session_id in self.connected

    def is_live(self, session_id: uuid.UUID) -> bool:
        return session_id in self.connected or session_id in self.parked

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None:
        self.delivered.append((session_id, message.type))

    def release_parked(self, session_id: uuid.UUID) -> None:
        self.parked.discard(session_id)
        self.released.append(session_id)


async def _until(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s * 100)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_messages_reach_the_replica_holding_the_socket(redis_url: str, redis_namespace: str) -> None:
    on_socket, parked_here, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    clients = [redis_client(redis_url), redis_client(redis_url)]
    a = RedisNotificationRelay(clients[0], namespace=redis_namespace, replica_id="a")
    b = RedisNotificationRelay(clients[1], namespace=redis_namespace, replica_id="b")
    sessions_a, sessions_b = Sessions(), Sessions(connected={on_socket}, parked={parked_here})
    a.bind(sessions_a)
    b.bind(sessions_b)
    await a.start()
    await b.start()
    try:
        notice = NoticeMsg(code="HQ_FAILED", message="the HQ voice is unavailable")
        await a.notify(on_socket, notice)
        await a.notify(elsewhere, notice)  # held by no replica: nobody delivers it
        await _until(lambda: sessions_b.delivered)
        # A malformed envelope on the channel is ignored; the relay goes on.
        await clients[0].publish(a.channel, b'{"kind": "message", "session_id": "nope"}')
        await a.notify(on_socket, notice)
        await _until(lambda: len(sessions_b.delivered) == 2)
        assert sessions_b.delivered == [(on_socket, "notice"), (on_socket, "notice")]
        assert sessions_a.delivered == []
        # A resumes the session B holds parked: B lets it go.
        await a.claim(parked_here)
        await _until(lambda: sessions_b.released)
        assert sessions_b.released == [parked_here] and not sessions_b.is_live(parked_here)
        # B's socket is local to B: delivered at once, without a round trip.
        await b.notify(on_socket, notice)
        assert sessions_b.delivered[-1] == (on_socket, "notice")
    finally:
        for relay in (a, b):
            await relay.aclose()
        for client in clients:
            await client.aclose()


async def test_redis_unreachable_falls_back_to_this_process() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    relay = RedisNotificationRelay(client, replica_id="lonely")
    sid = uuid.uuid4()
    sessions = Sessions(parked={sid})
    relay.bind(sessions)
    try:
        await relay.notify(sid, NoticeMsg(code="X", message="kept for the reconnect"))
        await relay.claim(sid)  # best effort: never raises
        assert sessions.delivered == [(sid, "notice")]
    finally:
        await relay.aclose()
        await client.aclose()
