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
from collections.abc import Callable, Iterable
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


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on ``host:port`` (binding it fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed one in TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


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
    if port and await asyncio.to_thread(port_in_use, host, port):
        # Another process (often a llama.cpp server left behind by a killed run) would answer the
        # readiness probe in this server's place, and every request after it.
        raise DependencyError(
            f"port {port} of the embedded LLM server is in use by another process; stop it "
            "(e.g. a llama.cpp server left from an earlier run) or set AVATAR_LLM__PORT=0 for any free port"
        )
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
        # The server's default stops a reply in flight as soon as another request arrives (each
        # session's reply would end the other's); with this off it serves one request at a time
        # and OpenAIChatModel queues the others fairly per session (see its ``slots``). This server
        # has no parallel slots (unlike llama.cpp's own ``llama-server -np``): see
        # docs/architecture.md, "Many sessions on one box".
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
        # The server's default keeps the logits of every prompt position (n_ctx x vocabulary
        # floats), touching ~190 KiB more memory per position it reaches and computing the output
        # layer for every prompt token; replies are sampled from the last position only. Off:
        # memory stays flat over a conversation and prompts compute ~25 % faster
        # (docs/resilience.md, "One model server per session").
        "--logits_all",
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
                tail = await asyncio.to_thread(_log_tail, log_path)
                await asyncio.to_thread(log_path.unlink, missing_ok=True)
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


def _log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


async def stop_llama_server(server: LlamaServer, grace_s: float = 5.0) -> None:
    """SIGTERM the server by PID, SIGKILL it after ``grace_s``; removes its log file."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGTERM)
        os.kill(server.pid, signal.SIGCONT)  # a server held by a ServerPause acts on the TERM
    try:
        await asyncio.wait_for(server.process.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)
        await server.process.wait()
    server.log_path.unlink(missing_ok=True)


class LlamaServerChild:
    """The embedded llama.cpp server as a :class:`avatar.infrastructure.supervisor.Child`.

    The port is chosen once, so a restarted server answers at the same ``base_url`` and the chat
    adapter needs no new address.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        name: str = "llm",
        host: str = LOOPBACK,
        port: int | None = None,
        n_ctx: int = default_of(LLMSettings, "n_ctx"),
        alias: str = "local",
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self._model_path = model_path
        self._host = host
        self._port = port or free_port(host)
        self._n_ctx = n_ctx
        self._alias = alias
        self._ready_timeout_s = ready_timeout_s
        self.server: LlamaServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}/v1"

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    async def start(self) -> None:
        self.server = await start_llama_server(
            self._model_path,
            host=self._host,
            port=self._port,
            n_ctx=self._n_ctx,
            alias=self._alias,
            ready_timeout_s=self._ready_timeout_s,
        )
        await self._warm_up()

    async def _warm_up(self) -> None:
        """One token of a tiny chat: the first request of a fresh server pays for setting up the
        chat template and faulting in the weights, so no listener's turn does."""
        body = {
            "model": self._alias,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
        }
        try:
            async with httpx.AsyncClient(timeout=self._ready_timeout_s) as client:
                response = await client.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            log.warning("llama.cpp server warm-up failed: %s: %s", type(exc).__name__, exc)
            return
        if response.status_code != 200:
            log.warning("llama.cpp server warm-up answered HTTP %d", response.status_code)

    async def wait(self) -> str:
        server = self.server
        assert server is not None, "wait() before start()"
        code = await server.process.wait()
        tail = (await asyncio.to_thread(_log_tail, server.log_path, 600)).strip()
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"llama.cpp server pid {server.pid} {how}" + (f": {tail}" if tail else "")

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await stop_llama_server(server)


class ServerPause:
    """:class:`avatar.application.ports.llm.GenerationPause` for the embedded model servers: the
    processes are stopped (``SIGSTOP``) while held and continued (``SIGCONT``) when the last hold
    is released, or after ``max_hold_s`` whatever the holds (docs/adr/0014-voice-latency.md,
    "Seventh round"). Lowering the servers' scheduling priority did not help the voice (its first
    chunk took as long at nice 15 as at nice 0); stopping them did.

    Args:
        pids: The servers' current PIDs (asked at every hold: a restarted server has a new one).
        max_hold_s: The longest the servers stay stopped, released or not.
    """

    def __init__(self, pids: Callable[[], Iterable[int | None]], max_hold_s: float = 0.5) -> None:
        if max_hold_s <= 0:
            raise ValueError("max_hold_s must be positive")
        self._pids = pids
        self.max_hold_s = max_hold_s
        self._holds = 0
        self._stopped: list[int] = []
        self._deadline: asyncio.TimerHandle | None = None
        #: Holds that stopped the servers, and the times the bound let them go on unreleased.
        self.pauses = 0
        self.expired = 0

    @property
    def paused(self) -> bool:
        return bool(self._stopped)

    def hold(self) -> Callable[[], None]:
        self._holds += 1
        if self._holds == 1:
            self._stop()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._holds -= 1
            if self._holds == 0:
                self._continue()

        return release

    def _stop(self) -> None:
        for pid in self._pids():
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:  # exited: its supervisor starts another
                continue
            self._stopped.append(pid)
        if self._stopped:
            self.pauses += 1
            self._deadline = asyncio.get_running_loop().call_later(self.max_hold_s, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self._stopped:
            self.expired += 1
            log.info("model servers held %.1f s without a release; letting them go on", self.max_hold_s)
        self._continue()

    def _continue(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        stopped, self._stopped = self._stopped, []
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
