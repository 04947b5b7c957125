"""The embedded model servers held while the voice makes a reply's first chunk
(docs/adr/0014-voice-latency.md, "Seventh round"): real processes stopped and continued by signal;
the hold is bounded; a held server still stops on SIGTERM; the real llama.cpp server answers after
a hold."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from avatar.application.ports.llm import ChatMessage
from avatar.infrastructure.llama_server import LlamaServer, ServerPause, stop_llama_server
from avatar.infrastructure.llm import build_chat
from avatar.settings import Placement, Settings


def _state(pid: int) -> str:
    """The process state letter from /proc (``T``: stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


BUSY = "import time\nwhile True: time.sleep(0.01)"


@contextlib.asynccontextmanager
async def _children(n: int) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"
        )
        for _ in range(n)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


async def _until_state(pid: int, states: str) -> None:
    for _ in range(500):
        if _state(pid) in states:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} is {_state(pid)!r}, not in {states!r}")


async def test_holds_stop_every_server_until_the_last_is_released() -> None:
    async with _children(2) as procs:
        pause = ServerPause(lambda: [p.pid for p in procs] + [None], max_hold_s=30)
        first = pause.hold()
        for p in procs:
            await _until_state(p.pid, "T")
        second = pause.hold()  # another reply's first chunk meanwhile
        first()
        first()  # a second release of the same hold changes nothing
        await asyncio.sleep(0.05)
        assert all(_state(p.pid) == "T" for p in procs) and pause.pauses == 1
        second()
        for p in procs:
            await _until_state(p.pid, "RS")
        assert (pause.paused, pause.pauses, pause.expired) == (False, 1, 0)


async def test_a_hold_never_released_lets_the_servers_go_on_after_its_bound() -> None:
    async with _children(1) as (proc,):
        pause = ServerPause(lambda: [proc.pid], max_hold_s=0.2)
        release = pause.hold()
        await _until_state(proc.pid, "T")
        await asyncio.sleep(0.4)
        assert _state(proc.pid) in "RS" and pause.expired == 1
        release()  # late: nothing to continue, nothing breaks
        again = pause.hold()  # the next reply holds them again
        await _until_state(proc.pid, "T")
        again()
        await _until_state(proc.pid, "RS")


async def test_a_server_that_exited_is_skipped() -> None:
    async with _children(1) as (proc,):
        proc.kill()
        await proc.wait()
        pause = ServerPause(lambda: [proc.pid], max_hold_s=30)
        pause.hold()()  # no process: nothing stopped, no error
        assert pause.pauses == 0 and not pause.paused


def test_the_bound_is_validated() -> None:
    with pytest.raises(ValueError, match="max_hold_s"):
        ServerPause(list, max_hold_s=0)


async def test_a_held_server_still_stops_on_sigterm() -> None:
    async with _children(1) as (proc,):
        log = Path(tempfile.mkstemp(suffix=".log")[1])
        pause = ServerPause(lambda: [proc.pid], max_hold_s=30)
        pause.hold()
        await _until_state(proc.pid, "T")
        async with asyncio.timeout(3):  # well before its SIGKILL (5 s)
            await stop_llama_server(LlamaServer(proc, "http://127.0.0.1:1/v1", log))
        assert proc.returncode == -15 and not await asyncio.to_thread(log.exists)


@pytest.mark.slow
async def test_the_real_embedded_server_is_held_and_answers_after() -> None:
    settings = Settings(environment="test")
    settings.llm.placement = Placement.EMBEDDED
    settings.llm.port = 0
    settings.llm.n_ctx = 2048
    settings.llm.embedded_servers = 1
    async with contextlib.AsyncExitStack() as stack:
        model, pause = await build_chat(settings, stack)
        assert isinstance(pause, ServerPause)
        health = await model.health()
        process = health.extra["process"]
        assert isinstance(process, dict)
        pid = int(process["pid"])
        release = pause.hold()
        await _until_state(pid, "T")
        reply = asyncio.create_task(_text(model, "Say hello."))
        await asyncio.sleep(0.3)
        assert not reply.done()  # generation waits for the voice
        release()
        assert (await asyncio.wait_for(reply, 60)).strip()
    settings.llm.embedded_yield_to_voice = False
    async with contextlib.AsyncExitStack() as stack:
        _model, none = await build_chat(settings, stack)
        assert none is None


async def _text(model: object, prompt: str) -> str:
    from avatar.infrastructure.llm import OpenAIChatModel

    assert isinstance(model, OpenAIChatModel)
    return "".join([t async for t in model.stream_chat([ChatMessage("user", prompt)], max_tokens=8)])
