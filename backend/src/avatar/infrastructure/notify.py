"""Server -> client events across orchestrator replicas over Redis pub/sub (docs/deploy.md,
"Many replicas"): the ``NotificationRelay`` port.

Background work (the HQ pass, prosody analysis) runs on whichever replica took the task from the
Redis stream; the session's socket may be on another. A message for a session whose client is
connected here is delivered at once; otherwise it is published on one channel that every replica
subscribes to, and the replica that holds the session delivers it (a replica where the session is
only parked for a reconnect keeps it for that reconnect). The same channel carries claims: a
replica that resumes a session announces it, and the others release their parked copy, so its
expiry there cannot end the session that now lives elsewhere.

Pub/sub is at most once: a message published while no replica holds the session is lost, as it is
for a client that is gone for good (the results stay readable through REST).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from avatar.application.conversation.events import ServerMessage
from avatar.application.ports.notify import LocalSessions
from avatar.settings import Settings

log = logging.getLogger(__name__)


class Envelope(BaseModel):
    """One pub/sub message: a server -> client message for a session, or a claim of a session."""

    kind: Literal["message", "claim"]
    session_id: uuid.UUID
    #: The replica that published it (its own subscriber skips it).
    origin: str
    message: ServerMessage | None = None


class RedisNotificationRelay:
    """Satisfies ``NotificationRelay`` with one Redis pub/sub channel shared by every replica.

    Args:
        client: A ``redis.asyncio`` client (the relay opens its own pub/sub connection from it).
        namespace: Key prefix shared by the replicas of one deployment.
        replica_id: This process's name in the envelopes (random when omitted).
        retry_s: Pause before subscribing again after the connection to Redis failed.
    """

    def __init__(
        self, client: Any, *, namespace: str = "avatar", replica_id: str | None = None, retry_s: float = 1.0
    ) -> None:
        self._redis = client
        self.channel = f"{namespace}:client-events"
        self.replica_id = replica_id or uuid.uuid4().hex
        self._retry_s = retry_s
        self._local: LocalSessions | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def bind(self, local: LocalSessions) -> None:
        self._local = local

    async def start(self) -> None:
        """Subscribe (returns once subscribed, so nothing published afterwards is missed)."""
        if self._local is None:
            raise RuntimeError("bind() the relay to this process's sessions before start()")
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="client-events-relay")
            waiter = asyncio.create_task(self._subscribed.wait())
            await asyncio.wait({waiter, self._task}, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self._task.done():
                self._task.result()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None:
        local = self._local
        if local is not None and local.holds_connection(session_id):
            await local.notify(session_id, message)
            return
        published = await self._publish(
            Envelope(kind="message", session_id=session_id, origin=self.replica_id, message=message)
        )
        if local is not None and (local.is_live(session_id) or not published):
            await local.notify(session_id, message)  # parked here: kept for its reconnect

    async def claim(self, session_id: uuid.UUID) -> None:
        await self._publish(Envelope(kind="claim", session_id=session_id, origin=self.replica_id))

    async def _publish(self, envelope: Envelope) -> bool:
        from redis.exceptions import RedisError

        try:
            await self._redis.publish(self.channel, envelope.model_dump_json())
        except (RedisError, OSError) as exc:  # best effort: the caller goes on
            log.warning("could not relay %s for session %s: %s", envelope.kind, envelope.session_id, exc)
            return False
        return True

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        await self._handle(item["data"])
            except (RedisError, OSError) as exc:
                log.warning(
                    "client-event relay lost Redis (%s); subscribing again in %.1f s", exc, self._retry_s
                )
                await asyncio.sleep(self._retry_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _handle(self, raw: bytes | str) -> None:
        try:
            envelope = Envelope.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("ignored a malformed client-event envelope: %s", exc.errors()[:1])
            return
        local = self._local
        if envelope.origin == self.replica_id or local is None:
            return
        sid = envelope.session_id
        if envelope.kind == "claim":
            local.release_parked(sid)
        elif envelope.message is not None and (local.holds_connection(sid) or local.is_live(sid)):
            try:
                await local.notify(sid, envelope.message)
            except Exception:  # one bad delivery must not stop the relay
                log.exception("session %s: relayed %s could not be delivered", sid, envelope.message.type)


async def build_client_notifier(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> RedisNotificationRelay | None:
    """The Redis relay when the deployment uses Redis (``queue.kind == "redis"``), else ``None``
    (one process: the session manager delivers its own messages)."""
    if settings.queue.kind != "redis":
        return None
    from avatar.infrastructure.queue import redis_client

    client = redis_client(settings.redis.url.get_secret_value())
    stack.push_async_callback(client.aclose)
    relay = RedisNotificationRelay(client)
    stack.push_async_callback(relay.aclose)
    return relay
