"""Client notifier port: push a protocol message to a session's connected client(s)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol


class ClientNotifier(Protocol):
    """Delivers server -> client messages (docs/protocol.md) outside the turn's own stream,
    e.g. ``prosody_analysis`` or ``hq_ready`` produced by background workers.

    Delivery is best effort: a session with no connected client keeps the message for when it
    reconnects (bounded), never raises.
    """

    async def notify(self, session_id: uuid.UUID, message: Mapping[str, Any]) -> None: ...
