"""The WebSocket server protocol the orchestrator runs under uvicorn (docs/protocol.md, Limits).

uvicorn's ``websockets-sansio`` protocol drops the answer the ``websockets`` library prepares when
an upgrade request is refused while it is parsed (a header line over 8 KiB, more than 128
headers, a request line over 8 KiB): the connection then stays open with no answer until the
client gives up. This subclass sends a prompt HTTP error in the documented error body and closes.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

from avatar.presentation.errors import error_body

#: Handshake limits enforced while the upgrade request is parsed.
MAX_HANDSHAKE_LINE_BYTES = MAX_LINE_LENGTH
MAX_HANDSHAKE_HEADERS = MAX_NUM_HEADERS
#: How far past ``conversation.max_frame_bytes`` the protocol library still reads a frame.
LIBRARY_FRAME_FACTOR = 4


def _refusal(exc: Exception) -> tuple[int, str, str, str]:
    name = type(exc).__name__
    if name == "RequestLineTooLong":
        return 414, "URI Too Long", "URI_TOO_LONG", f"the request line exceeds {MAX_LINE_LENGTH} bytes"
    if name in ("HeaderLineTooLong", "TooManyHeaders"):
        return (
            431,
            "Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
            f"a handshake header line exceeds {MAX_LINE_LENGTH} bytes or there are more than "
            f"{MAX_NUM_HEADERS} headers",
        )
    return 400, "Bad Request", "BAD_REQUEST", "the WebSocket handshake is not a valid HTTP request"


class BoundedHandshakeProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` that answers a refused handshake at once instead of holding it open."""

    def data_received(self, data: bytes) -> None:
        if self.handshake_initiated:
            super().data_received(data)
            return
        self.conn.receive_data(data)
        exc: Any = self.conn.handshake_exc
        if exc is None:
            if self.conn.parser_exc is not None:  # pragma: no cover - uvicorn's own path
                self.handle_parser_exception()
                return
            self.handle_events()
            return
        status, phrase, code, message = _refusal(exc)
        body = json.dumps(error_body(code, message)).encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.conn.data_to_send()  # the library's own plain-text answer is replaced by ours
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(head + body)
        self.transport.close()


def uvicorn_ws_options(max_frame_bytes: int) -> dict[str, Any]:
    """The WebSocket settings ``avatar up`` and ``avatar serve orchestrator`` start uvicorn with.

    The protocol library's own frame limit is set above ``conversation.max_frame_bytes`` so that
    a frame a little too large still reaches the app, which answers ``FRAME_TOO_LARGE`` before
    closing with 1009; a frame past ``LIBRARY_FRAME_FACTOR`` times the limit is closed with 1009
    by the library without being buffered.
    """
    return {
        "ws": BoundedHandshakeProtocol,
        "ws_max_size": max_frame_bytes * LIBRARY_FRAME_FACTOR,
        "ws_per_message_deflate": False,  # audio does not compress; deflate costs CPU per frame
    }
