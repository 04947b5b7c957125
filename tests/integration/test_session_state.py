"""Session-state stores: resumable state with a TTL, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from avatar.application.ports.session_state import ResumableSession, SessionStateStore, hash_token
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.domain.models import TTSMode
from avatar.infrastructure.queue import redis_client
from avatar.infrastructure.session_state import (
    InMemorySessionStateStore,
    RedisSessionStateStore,
    build_session_state_store,
)
from avatar.settings import QueueSettings, RedisSettings, Settings
from tests.support.net import free_port

NOW = datetime(2025, 11, 22, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_namespace: str) -> SessionStateStore:
    if request.param == "memory":
        return InMemorySessionStateStore()
    return RedisSessionStateStore(request.getfixturevalue("redis"), namespace=redis_namespace)


def _state(token: str = "tok-123") -> ResumableSession:
    return ResumableSession(
        session_id=uuid.uuid4(),
        token_hash=hash_token(token),
        tts_mode=TTSMode.HQ,
        voice="joe",
        voice_profile_id=uuid.uuid4(),
        last_seen=NOW,
        extra={"seq": "41"},
    )


async def test_round_trip_touch_and_delete(store: SessionStateStore) -> None:
    state = _state()
    await store.save(state, timedelta(seconds=30))
    loaded = await store.load(state.session_id)
    assert loaded == state
    assert loaded.accepts("tok-123")
    assert not loaded.accepts("tok-999")
    assert "tok-123" not in str(loaded)  # only the hash is kept

    later = NOW + timedelta(seconds=20)
    assert await store.touch(state.session_id, later, timedelta(seconds=30))
    touched = await store.load(state.session_id)
    assert touched is not None
    assert touched.last_seen == later

    await store.delete(state.session_id)
    assert await store.load(state.session_id) is None
    assert not await store.touch(state.session_id, later, timedelta(seconds=30))
    assert (await store.health()).ok


async def test_state_expires_after_the_grace_period(store: SessionStateStore) -> None:
    short, kept = _state(), _state()
    await store.save(short, timedelta(milliseconds=150))
    await store.save(kept, timedelta(seconds=30))
    await asyncio.sleep(0.3)
    assert await store.load(short.session_id) is None
    assert not await store.touch(short.session_id, NOW, timedelta(seconds=30))  # not resurrected
    assert await store.load(short.session_id) is None
    assert await store.load(kept.session_id) == kept
    with pytest.raises(InvalidInputError):
        await store.save(kept, timedelta(0))


async def test_touch_restarts_the_ttl(store: SessionStateStore) -> None:
    state = _state()
    await store.save(state, timedelta(milliseconds=400))
    await asyncio.sleep(0.25)
    assert await store.touch(state.session_id, NOW, timedelta(milliseconds=400))
    await asyncio.sleep(0.25)  # 0.5 s after save, 0.25 s after touch
    assert await store.load(state.session_id) is not None


async def test_another_replica_sees_the_state(redis_url: str, redis_namespace: str) -> None:
    one, two = redis_client(redis_url), redis_client(redis_url)
    try:
        state = _state()
        await RedisSessionStateStore(one, namespace=redis_namespace).save(state, timedelta(seconds=30))
        assert await RedisSessionStateStore(two, namespace=redis_namespace).load(state.session_id) == state
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_outage_is_reported() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    store = RedisSessionStateStore(client)
    try:
        with pytest.raises(DependencyError):
            await store.load(uuid.uuid4())
        assert not (await store.health()).ok
    finally:
        await client.aclose()


async def test_build_session_state_store_by_deployment(redis_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        local = await build_session_state_store(Settings(), stack)
        shared = await build_session_state_store(
            Settings(queue=QueueSettings(kind="redis"), redis=RedisSettings(url=redis_url)), stack
        )
        assert isinstance(local, InMemorySessionStateStore)
        assert isinstance(shared, RedisSessionStateStore)
