"""The one serializer of the realtime protocol: typed messages (docs/protocol.md) to JSON text."""

from __future__ import annotations

from avatar.application.conversation.events import SERVER_MESSAGE, ErrorMsg, ServerMessage


def encode(message: ServerMessage) -> str:
    """A server -> client message as the JSON text of one WebSocket frame (audio as base64)."""
    return message.model_dump_json()


def to_wire(message: ServerMessage) -> dict[str, object]:
    """The message as the client decodes it (a JSON object); for tests and diagnostics."""
    wire: dict[str, object] = SERVER_MESSAGE.dump_python(message, mode="json")
    return wire


def error(code: str, message: str) -> str:
    """An ``error`` frame (the connection's own refusals: bad JSON, bad audio, a full server)."""
    return encode(ErrorMsg(code=code, message=message))
