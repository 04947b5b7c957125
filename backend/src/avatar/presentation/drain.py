"""Graceful drain of an orchestrator replica (docs/deploy.md, "Graceful drain").

On SIGTERM (Kubernetes deleting the pod, ``docker stop``) the replica first drains instead of
closing every socket at once:

1. readiness (``GET /api/v1/health/ready``) turns 503, so the load balancer stops sending it
   new clients;
2. new sessions are refused with 503 ``DRAINING`` and ``Retry-After``; a WebSocket for a session
   this replica does not hold is closed with 1012 (service restart), which clients reconnect after;
3. replies in flight on the open sockets are allowed to finish, up to ``drain_timeout_s``;
4. then the server's own shutdown runs: sockets close with 1012 and every session's state stays
   in the session-state store (Redis in production), so the client's reconnect resumes the
   conversation on another replica.

A second SIGTERM skips the wait. The handler wraps the one uvicorn installs, so it is only active
when the server runs in the main thread (``avatar up``, ``avatar serve orchestrator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar.presentation.errors import error_body

log = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012
_SESSION_SOCKET = re.compile(r"^/ws/([0-9a-fA-F-]{36})$")
_CREATE_SESSION = "/api/v1/sessions"

Handler = Callable[[int, FrameType | None], Any]


class _Replying(Protocol):
    @property
    def replying(self) -> bool: ...


class _Sessions(Protocol):
    def get(self, session_id: uuid.UUID) -> _Replying | None: ...

    def is_live(self, session_id: uuid.UUID) -> bool: ...


class Drain:
    """The drain state of one app (``app.state.drain``) and the sockets it waits on.

    Args:
        timeout_s: The longest the drain waits for replies in flight.
        retry_after_s: What refusals tell clients to wait (``Retry-After``).
        poll_s: How often the replies in flight are counted while waiting.
    """

    def __init__(self, timeout_s: float, retry_after_s: int, poll_s: float = 0.05) -> None:
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.poll_s = poll_s
        self.draining = False
        self.sessions: _Sessions | None = None
        self._sockets: Counter[uuid.UUID] = Counter()
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Stop admitting: readiness 503, new sessions refused."""
        if not self.draining:
            log.info("draining: new sessions are refused; waiting for %d replies", self.replies_in_flight())
        self.draining = True

    def replies_in_flight(self) -> int:
        """Replies running now on the sockets open to this replica."""
        if self.sessions is None:
            return 0
        count = 0
        for session_id in list(self._sockets):
            session = self.sessions.get(session_id)
            if session is not None and session.replying:
                count += 1
        return count

    async def run(self) -> bool:
        """Begin, then wait until no reply is in flight or the timeout passes; True if drained."""
        self.begin()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while self.replies_in_flight():
            if loop.time() >= deadline:
                log.warning("drain timeout: %d replies still in flight", self.replies_in_flight())
                return False
            await asyncio.sleep(self.poll_s)
        log.info("drained: no reply in flight")
        return True

    def install_signal_handler(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Wrap the server's SIGTERM handler with the drain; returns the function that unwraps it.

        Nothing is installed outside the main thread or when no Python handler is in place (the
        server would not shut down on SIGTERM anyway).
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return lambda: None
        server_exit: Handler = previous

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self._task is not None:  # a second SIGTERM: stop waiting
                server_exit(sig, frame)
                return
            loop.call_soon_threadsafe(self._start, lambda: server_exit(sig, None))

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return restore

    def _start(self, then: Callable[[], None]) -> None:
        async def drain_then_exit() -> None:
            try:
                await self.run()
            finally:
                then()

        if self._task is None:
            self._task = asyncio.create_task(drain_then_exit(), name="drain")

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- admission (used by DrainMiddleware) ----------------------------------------------------

    def opened(self, session_id: uuid.UUID) -> None:
        self._sockets[session_id] += 1

    def closed(self, session_id: uuid.UUID) -> None:
        self._sockets[session_id] -= 1
        if self._sockets[session_id] <= 0:
            del self._sockets[session_id]

    def holds(self, session_id: uuid.UUID) -> bool:
        return self.sessions is not None and self.sessions.is_live(session_id)


class DrainMiddleware:
    """Refuses new sessions while draining and counts the session sockets open to this replica."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drain = self.drain
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and drain.draining
            and scope["method"] == "POST"
            and path == _CREATE_SESSION
        ):
            await self._refuse_http(send)
            return
        match = _SESSION_SOCKET.match(path) if scope["type"] == "websocket" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        session_id = uuid.UUID(match.group(1))
        if drain.draining and not drain.holds(session_id):
            await self._refuse_socket(receive, send)
            return
        drain.opened(session_id)
        try:
            await self.app(scope, receive, send)
        finally:
            drain.closed(session_id)

    async def _refuse_http(self, send: Send) -> None:
        body = json.dumps(
            error_body("DRAINING", "this server is shutting down; retry to be served by another")
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.drain.retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_socket(self, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_SERVICE_RESTART,
                "reason": f"server draining; reconnect in {self.drain.retry_after_s} s",
            }
        )
