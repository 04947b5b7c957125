"""Run llama-cpp-python's OpenAI-compatible server as a child process (the embedded LLM)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from avatar.domain.errors import DependencyError
from avatar.settings import LOOPBACK, LLMSettings, default_of

log = logging.getLogger(__name__)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class LlamaServer:
    """A running ``python -m llama_cpp.server`` process."""

    process: asyncio.subprocess.Process
    base_url: str  # ends with /v1
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


async def start_llama_server(
    model_path: Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    n_ctx: int = default_of(LLMSettings, "n_ctx"),
    n_threads: int | None = None,
    alias: str = "local",
    ready_timeout_s: float = 60.0,
) -> LlamaServer:
    """Start the server and wait until it answers ``GET /v1/models``.

    Raises:
        DependencyError: the model file is missing, or the server exited or did not become ready.
    """
    if not await asyncio.to_thread(model_path.is_file):
        raise DependencyError(f"LLM model file {model_path} not found; run `avatar models verify`")
    port = port or free_port(host)
    threads = n_threads or max(1, min(4, os.cpu_count() or 1))
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--model_alias",
        alias,
        "--verbose",
        "False",
    ]
    fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )
    server = LlamaServer(proc, f"http://{host}:{port}/v1", log_path)
    deadline = time.monotonic() + ready_timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if proc.returncode is not None:
                tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
                raise DependencyError(f"llama.cpp server exited with code {proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.base_url}/models")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                await stop_llama_server(server)
                raise DependencyError(f"llama.cpp server not ready after {ready_timeout_s:.0f} s")
            await asyncio.sleep(0.1)
    log.info("llama.cpp server pid %d ready at %s", proc.pid, server.base_url)
    return server


async def stop_llama_server(server: LlamaServer, grace_s: float = 5.0) -> None:
    """SIGTERM the server by PID, SIGKILL it after ``grace_s``; removes its log file."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(server.process.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)
        await server.process.wait()
    server.log_path.unlink(missing_ok=True)
