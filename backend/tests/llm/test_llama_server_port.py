"""The embedded LLM server's fixed port taken by another process (a llama.cpp server left behind
by a killed run): the start fails with a clear error instead of the readiness probe taking the
stranger's answer for the new server's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from avatar.domain.errors import DependencyError
from avatar.infrastructure.llama_server import free_port, port_in_use, start_llama_server
from avatar.settings import LOOPBACK


async def _stranger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request 200 with an empty model list, as a llama.cpp server would."""
    await reader.readuntil(b"\r\n\r\n")
    body = b'{"object":"list","data":[]}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    writer.write(body)
    await writer.drain()
    writer.close()


async def test_a_port_held_by_another_server_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")  # never loaded: the port is checked before the server starts
    server = await asyncio.start_server(_stranger, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert port_in_use(LOOPBACK, port)
        with pytest.raises(DependencyError, match=f"port {port} .* in use by another process"):
            await start_llama_server(model, port=port, ready_timeout_s=5)
    finally:
        server.close()
        await server.wait_closed()
    assert not port_in_use(LOOPBACK, port)
    assert not port_in_use(LOOPBACK, free_port())
