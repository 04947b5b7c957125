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
