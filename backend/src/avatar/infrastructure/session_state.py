"""Session-state stores (the ``SessionStateStore`` port): in memory, or in Redis for many replicas."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.session_state import ResumableSession
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.domain.models import TTSMode
from avatar.settings import Settings


def _ttl_ms(ttl: timedelta) -> int:
    ms = int(ttl.total_seconds() * 1000)
    if ms <= 0:
        raise InvalidInputError("a session state TTL must be positive")
    return ms


def _dump(state: ResumableSession) -> str:
    return json.dumps(
        {
            "session_id": str(state.session_id),
            "token_hash": state.token_hash,
            "tts_mode": state.tts_mode.value,
            "voice": state.voice,
            "voice_profile_id": str(state.voice_profile_id) if state.voice_profile_id else None,
            "last_seen": state.last_seen.isoformat() if state.last_seen else None,
            "extra": state.extra,
        }
    )


def _load(raw: str | bytes) -> ResumableSession:
    data = json.loads(raw)
    return ResumableSession(
        session_id=uuid.UUID(data["session_id"]),
        token_hash=data["token_hash"],
        tts_mode=TTSMode(data["tts_mode"]),
        voice=data["voice"],
        voice_profile_id=uuid.UUID(data["voice_profile_id"]) if data["voice_profile_id"] else None,
        last_seen=datetime.fromisoformat(data["last_seen"]) if data["last_seen"] else None,
        extra={str(k): str(v) for k, v in data["extra"].items()},
    )


class InMemorySessionStateStore:
    """One process's sessions (embedded placement); expired entries are dropped when read."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._items: dict[uuid.UUID, tuple[float, ResumableSession]] = {}

    async def save(self, state: ResumableSession, ttl: timedelta) -> None:
        self._items[state.session_id] = (self._monotonic() + _ttl_ms(ttl) / 1000, state)
        self._sweep()

    async def load(self, session_id: uuid.UUID) -> ResumableSession | None:
        item = self._items.get(session_id)
        if item is None:
            return None
        if item[0] <= self._monotonic():
            del self._items[session_id]
            return None
        return item[1]

    async def touch(self, session_id: uuid.UUID, now: datetime, ttl: timedelta) -> bool:
        state = await self.load(session_id)
        if state is None:
            return False
        await self.save(state.seen(now), ttl)
        return True

    async def delete(self, session_id: uuid.UUID) -> None:
        self._items.pop(session_id, None)

    def _sweep(self) -> None:
        now = self._monotonic()
        for key in [k for k, (deadline, _) in self._items.items() if deadline <= now]:
            del self._items[key]

    async def health(self) -> ComponentHealth:
        return ComponentHealth(
            name="session_state", ok=True, detail="ok", extra={"kind": "memory", "sessions": len(self._items)}
        )


class RedisSessionStateStore:
    """Sessions as JSON values with a Redis TTL (``PX``), readable by every orchestrator replica."""

    def __init__(self, client: Any, *, namespace: str = "avatar") -> None:
        self._redis = client
        self._namespace = namespace

    def _key(self, session_id: uuid.UUID) -> str:
        return f"{self._namespace}:session:{session_id}"

    async def _call(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except RedisError as exc:
            raise DependencyError(f"session state store unavailable ({what}): {exc}") from exc

    async def save(self, state: ResumableSession, ttl: timedelta) -> None:
        await self._call("save", self._redis.set(self._key(state.session_id), _dump(state), px=_ttl_ms(ttl)))

    async def load(self, session_id: uuid.UUID) -> ResumableSession | None:
        raw = await self._call("load", self._redis.get(self._key(session_id)))
        return _load(raw) if raw is not None else None

    async def touch(self, session_id: uuid.UUID, now: datetime, ttl: timedelta) -> bool:
        state = await self.load(session_id)
        if state is None:
            return False
        # XX: never resurrect a state that expired or was deleted between the read and this write.
        written = await self._call(
            "touch", self._redis.set(self._key(session_id), _dump(state.seen(now)), px=_ttl_ms(ttl), xx=True)
        )
        return bool(written)

    async def delete(self, session_id: uuid.UUID) -> None:
        await self._call("delete", self._redis.delete(self._key(session_id)))

    async def health(self) -> ComponentHealth:
        try:
            ok = bool(await self._redis.ping())
        except Exception as exc:  # health reports, never raises
            return ComponentHealth(
                name="session_state", ok=False, detail=f"{type(exc).__name__}: {exc}", extra={"kind": "redis"}
            )
        return ComponentHealth(name="session_state", ok=ok, detail="ok", extra={"kind": "redis"})


async def build_session_state_store(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> InMemorySessionStateStore | RedisSessionStateStore:
    """Redis when the deployment uses Redis (``settings.queue.kind == "redis"``, compose), else memory."""
    if settings.queue.kind != "redis":
        return InMemorySessionStateStore()
    from avatar.infrastructure.queue import redis_client

    client = redis_client(settings.redis.url.get_secret_value())
    stack.push_async_callback(client.aclose)
    try:
        await client.ping()
    except Exception as exc:
        raise DependencyError(f"redis unreachable for session state: {exc}") from exc
    return RedisSessionStateStore(client)
