"""Loopback helpers shared by the tests: free ports and real uvicorn servers of an ASGI app."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from avatar.bench.live import free_port, running_server, server_config

__all__ = ["free_port", "running_server", "serve_in_thread", "wait_for_port"]


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int | None = None, startup_timeout_s: float = 300.0) -> Iterator[str]:
    """Run ``app`` with uvicorn (lifespan included) in a thread with its own event loop until the
    block exits; yields the base URL. Use it when the app's state must not share the tests' loop."""
    port = port or free_port()
    server = uvicorn.Server(server_config(app, port))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped during start-up (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the server did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
