"""Client notifier port: push a protocol message to a session's connected client(s)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the port names the protocol's message type only; no import cycle at run time
    from avatar.application.conversation.events import ServerMessage


class ClientNotifier(Protocol):
    """Delivers server -> client messages (docs/protocol.md) outside the turn's own stream,
    e.g. ``prosody_analysis`` or ``hq_ready`` produced by background workers.

    Delivery is best effort: a session with no connected client keeps the message for when it
    reconnects (bounded), never raises.
    """

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None: ...


class LocalSessions(Protocol):
    """What a relay needs of this process's session manager."""

    def holds_connection(self, session_id: uuid.UUID) -> bool:
        """Whether a client of the session is connected to this process."""
        ...

    def is_live(self, session_id: uuid.UUID) -> bool: ...

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None:
        """Deliver to the session held here (connected now, or kept for its reconnect)."""
        ...

    def release_parked(self, session_id: uuid.UUID) -> None:
        """Drop a session parked here because another process now serves it (its state is kept)."""
        ...


class NotificationRelay(ClientNotifier, Protocol):
    """A :class:`ClientNotifier` across processes (docs/deploy.md, "Many replicas"): a message for a
    session whose client is connected elsewhere reaches the process holding its socket, and a
    session resumed by one process is released by the others.

    ``bind`` is called once with this process's sessions before ``start``.
    """

    def bind(self, local: LocalSessions) -> None: ...

    async def start(self) -> None: ...

    async def claim(self, session_id: uuid.UUID) -> None:
        """Announce that this process now serves the session (best effort, never raises)."""
        ...

    async def aclose(self) -> None: ...
