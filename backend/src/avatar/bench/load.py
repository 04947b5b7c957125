"""``avatar bench load --sessions N``: how many live sessions one orchestrator process carries.

The server is a real ``avatar serve orchestrator --instant-engines`` process (no models: it
endpoints after ~300 ms of silence following sound and answers with a short tone), started fresh
for each level. The load comes from separate worker processes (``multiprocessing``), each running
many asyncio clients over the real WebSocket protocol (docs/protocol.md, JSON + base64 audio):
every session streams its microphone at real time (100 ms chunks: 1 s of tone, then silence) for
``turns`` turns. Measured per level:

* end of speech (the last tone chunk sent) -> the first reply audio chunk received, P50 and P95,
  and the P95 added over the 1-session level (the instant engines' own endpoint wait, ~300 ms, is
  the same at every level, so what is added is the orchestrator's and the transport's);
* failed sessions (refused, closed, an error, a turn without audio in time);
* the server's CPU (per cent of one core) and RSS growth, per session (psutil on its PID).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar.bench.report import percentile, table, write_section

if TYPE_CHECKING:
    from avatar.bench.transport_floor import TransportFloor
from avatar.presentation.audio_frames import encode_audio_in

CHUNK_MS = 100
SAMPLE_RATE = 16000
SPEECH_MS = 1000
#: Silence streamed after each reply before the next utterance: the reply (~0.8 s of tone) plays
#: out at the listener first, or the next utterance would barge in on it.
PAUSE_MS = 1500
TURN_TIMEOUT_S = 30.0
DEFAULT_LEVELS = (1, 50, 100, 250, 500)
TARGET_ADDED_P95_MS = 20.0
#: Session creations in flight per load process (and its pooled HTTP connections).
CREATE_CONCURRENCY = 16


@dataclass
class WorkerResult:
    """What one load process measured (sent back to the parent through a queue)."""

    latencies_ms: list[float] = field(default_factory=list)
    #: The server's own end of speech -> first audio (``turn_completed.latency_ms.e2e``).
    server_e2e_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sessions: int = 0
    #: This load process's own CPU time over its run, s (``time.process_time``).
    cpu_s: float = 0.0


@dataclass
class Level:
    sessions: int
    latencies_ms: list[float]
    server_e2e_ms: list[float]
    failures: list[str]
    cpu_percent_per_session: float
    rss_mb_per_session: float
    server_cpu_percent: float
    server_rss_mb: float
    processes: int
    #: The server's CPU time over the level, s (comparable between runs whatever they lasted).
    server_cpu_s: float = 0.0
    #: The load processes' own CPU over the level, per cent of one core (all of them together).
    load_cpu_percent: float = 0.0
    #: The whole machine's busy share over the level, per cent of all its cores (every process:
    #: the server, the load, anything else running).
    machine_busy_percent: float = 0.0

    @property
    def cpu_ms_per_turn(self) -> float:
        """Server CPU per turn (the turn's share of the streaming, the reply, the storage), ms."""
        return 1000.0 * self.server_cpu_s / len(self.latencies_ms) if self.latencies_ms else float("nan")


@functools.cache
def _pcm(ms: int, amplitude: int) -> bytes:
    """A 200 Hz tone; computed once per load process (per sample in Python it cost the clients ~15 %
    of their CPU when every session built its own, while other sessions' turns were being timed)."""
    n = SAMPLE_RATE * ms // 1000
    return b"".join(
        int(amplitude * math.sin(2 * math.pi * 200 * i / SAMPLE_RATE)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


# --- the clients (inside each load process) ------------------------------------------------------


class _Turn:
    def __init__(self) -> None:
        self.turn_id: str | None = None
        self.first_audio: float | None = None
        self.server_e2e_ms: float | None = None
        self.done = asyncio.Event()
        self.error: str | None = None


@functools.cache
def _frames(pcm: bytes, binary: bool) -> list[str | bytes]:
    """The microphone's frames: binary audio frames (docs/protocol.md, "Binary audio frames"), or
    ``audio_chunk`` JSON with base64."""
    if binary:
        return [encode_audio_in(c, SAMPLE_RATE, seq) for seq, c in enumerate(_chunks(pcm))]
    return [
        json.dumps(
            {"type": "audio_chunk", "data": base64.b64encode(c).decode(), "sr": SAMPLE_RATE, "timestamp": 0}
        )
        for c in _chunks(pcm)
    ]


async def _session(
    base: str,
    turns: int,
    start_at: float,
    out: WorkerResult,
    http: Any,
    binary: bool,
    key: str,
    creating: asyncio.Semaphore,
    stop_at: float | None = None,
) -> None:
    """One client: ``turns`` turns, or fewer once ``time.monotonic()`` passes ``stop_at`` (soak)."""
    import websockets

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    tone = _frames(_pcm(SPEECH_MS, 6000), binary)
    silence = _frames(bytes(SAMPLE_RATE * CHUNK_MS // 1000 * 2), binary)[0]
    try:
        async with creating:
            response = await http.post(
                f"{base}/api/v1/sessions", json={}, headers={"Authorization": f"Bearer {key}"}
            )
        if response.status_code != 201:
            raise RuntimeError(f"create: HTTP {response.status_code} {response.text[:120]}")
        created = response.json()
        url = created["ws_url"] + ("&audio=binary" if binary else "")
        async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
            current: list[_Turn] = []

            async def receive() -> None:
                async for raw in ws:
                    message: dict[str, Any]
                    if isinstance(raw, bytes):  # reply audio: only the turn id is needed here
                        kind, message = "audio_chunk", {"turn_id": _turn_id(raw)}
                    else:
                        message = json.loads(raw)
                        kind = message["type"]
                    turn = current[-1] if current else None
                    if turn is None:
                        continue
                    if kind == "error":
                        turn.error = f"{message.get('code')}: {message.get('message')}"
                        turn.done.set()
                    elif kind == "turn_started" and turn.turn_id is None:
                        turn.turn_id = message["turn_id"]
                    elif turn.turn_id is None or message.get("turn_id") != turn.turn_id:
                        continue  # not this utterance's reply
                    elif kind == "audio_chunk" and turn.first_audio is None:
                        turn.first_audio = loop.time()
                    elif kind == "turn_completed":
                        e2e = (message.get("latency_ms") or {}).get("e2e")
                        turn.server_e2e_ms = float(e2e) if e2e is not None else None
                        turn.done.set()
                    elif kind == "interrupted":
                        turn.error = "the reply was interrupted"
                        turn.done.set()
                for turn in current:
                    turn.done.set()

            receiver = asyncio.create_task(receive())
            try:
                next_at = loop.time()

                async def send(frame: str | bytes) -> None:
                    nonlocal next_at
                    await ws.send(frame)
                    next_at += CHUNK_MS / 1000.0
                    await asyncio.sleep(max(0.0, next_at - loop.time()))

                for _ in range(turns):
                    if stop_at is not None and time.monotonic() >= stop_at:
                        break
                    turn = _Turn()
                    current.append(turn)
                    for chunk in tone[:-1]:
                        await send(chunk)
                    await ws.send(tone[-1])
                    speech_end = loop.time()
                    next_at += CHUNK_MS / 1000.0
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                    deadline = speech_end + TURN_TIMEOUT_S
                    while not turn.done.is_set():  # the microphone stays open: silence at real time
                        if loop.time() > deadline or receiver.done():
                            raise RuntimeError(
                                "no complete reply in time" if not receiver.done() else "closed"
                            )
                        await send(silence)
                    if turn.error:
                        raise RuntimeError(turn.error)
                    if turn.first_audio is None:
                        raise RuntimeError("the turn completed without audio")
                    out.latencies_ms.append((turn.first_audio - speech_end) * 1000.0)
                    if turn.server_e2e_ms is not None:
                        out.server_e2e_ms.append(turn.server_e2e_ms)
                    for _ in range(PAUSE_MS // CHUNK_MS):
                        await send(silence)
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
    except Exception as exc:
        out.failures.append(f"{type(exc).__name__}: {exc}"[:200])


def _turn_id(frame: bytes) -> str:
    """The ``turn_id`` of a reply audio frame (bytes 4-19, docs/protocol.md)."""
    return str(uuid.UUID(bytes=frame[4:20]))


def _chunks(pcm: bytes) -> list[bytes]:
    step = SAMPLE_RATE * CHUNK_MS // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def _worker_main(
    base: str,
    key: str,
    sessions: int,
    turns: int,
    ramp_s: float,
    offset: float,
    binary: bool,
    stop_at: float | None = None,
) -> WorkerResult:
    import httpx

    out = WorkerResult(sessions=sessions)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # The clients drop an idle pooled connection after 2 s, before uvicorn closes it (5 s): with
    # httpx's default of 5 s both ends hit the same moment, and a request sent on a connection the
    # server is closing fails with ReadError (connection reset): the "failed" sessions of the first
    # 500-session runs (docs/benchmarks.md, "load").
    limits = httpx.Limits(
        max_connections=CREATE_CONCURRENCY, max_keepalive_connections=CREATE_CONCURRENCY, keepalive_expiry=2.0
    )
    # At most CREATE_CONCURRENCY creations wait in httpx's pool: with hundreds queued there, every
    # response re-scanned the whole queue (~27 % of a 500-session load process's CPU in a py-spy
    # profile, while the other sessions' turns were timed).
    creating = asyncio.Semaphore(CREATE_CONCURRENCY)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        await asyncio.gather(
            *[
                _session(
                    base,
                    turns,
                    t0 + ramp_s * ((i + offset) / max(1, sessions)),
                    out,
                    http,
                    binary,
                    key,
                    creating,
                    stop_at,
                )
                for i in range(sessions)
            ]
        )
    return out


def _worker(
    base: str,
    key: str,
    sessions: int,
    turns: int,
    ramp_s: float,
    offset: float,
    binary: bool,
    queue: Any,
    stop_at: float | None = None,
) -> None:
    """One load process (spawned): its clients' figures go back through ``queue``."""
    import uvloop  # the clients' own loop overhead stays small next to the server's (as uvicorn's)

    cpu0 = time.process_time()
    try:
        result = uvloop.run(_worker_main(base, key, sessions, turns, ramp_s, offset, binary, stop_at))
    except Exception as exc:  # reported as failed sessions, never a hang of the parent
        result = WorkerResult(failures=[f"worker: {type(exc).__name__}: {exc}"] * sessions, sessions=sessions)
    result.cpu_s = time.process_time() - cpu0
    queue.put(result)


# --- the server and its resource use -----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(workdir: Path, extra_env: dict[str, str] | None = None) -> Any:
    port = _free_port()
    env = {
        **os.environ,
        "AVATAR_ENVIRONMENT": "test",
        "AVATAR_SECURITY__SECRET_KEY": secrets.token_urlsafe(32),
        "AVATAR_SECURITY__MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "AVATAR_DATA_DIR": str(workdir / "data"),
        "AVATAR_OBJECT_STORE__ROOT": str(workdir / "objects"),
        **(extra_env or {}),
    }
    env.pop("AVATAR_CONVERSATION__MAX_SESSIONS", None)  # --instant-engines lifts the limit
    avatar = Path(sys.executable).with_name("avatar")
    cmd = [str(avatar), "serve", "orchestrator", "--instant-engines", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, env, workdir / f"server-{port}.log", base, ready_timeout_s=60, stop_grace_s=30) as pid:
        # the instant server's load-testing user (docs/security.md: every REST call authenticates)
        key = (workdir / "data" / "secrets" / "instant_api_key").read_text()
        yield base, pid, key


@contextlib.contextmanager
def serving(
    cmd: list[str], env: dict[str, str], log: Path, base: str, *, ready_timeout_s: float, stop_grace_s: float
) -> Iterator[int]:
    """Run ``cmd`` (an avatar server) with its output in ``log`` until ``base``'s
    ``/api/v1/health/ready`` answers 200; yields its PID, then stops it by PID (SIGTERM, SIGKILL
    after ``stop_grace_s``)."""
    import httpx

    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    what = f"avatar {cmd[1]}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/v1/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} was not ready in time: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(stop_grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class _Sampler:
    """Samples the server's RSS in a thread; CPU from its CPU times over the run."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.baseline_rss = self.process.memory_info().rss
        self.peak_rss = self.baseline_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0 = self._cpu()
        self._machine0 = psutil.cpu_times()
        self._t0 = time.monotonic()
        self.cpu_percent = 0.0
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self.machine_busy_percent = 0.0

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(Exception):
                self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        import psutil

        self.cpu_seconds = self._cpu() - self._cpu0
        self.wall_seconds = max(1e-9, time.monotonic() - self._t0)
        self.cpu_percent = 100.0 * self.cpu_seconds / self.wall_seconds
        self.machine_busy_percent = _busy_percent(self._machine0, psutil.cpu_times())
        self._stop.set()
        self._thread.join()


def _busy_percent(before: Any, after: Any) -> float:
    """The machine's busy share between two ``psutil.cpu_times()`` readings, per cent of all cores
    (idle and I/O wait count as not busy)."""
    fields = before._fields
    total = sum(getattr(after, f) - getattr(before, f) for f in fields)
    idle = sum(getattr(after, f) - getattr(before, f) for f in ("idle", "iowait") if f in fields)
    return 100.0 * (total - idle) / total if total > 0 else float("nan")


def run_level(sessions: int, turns: int, processes: int, workdir: Path, binary: bool = False) -> Level:
    """One level: a fresh server, ``sessions`` clients in ``processes`` load processes."""
    processes = max(1, min(processes, sessions))
    ramp_s = min(5.0, 0.02 * sessions)  # connects spread out, as people arrive
    ctx = multiprocessing.get_context("spawn")
    with _server(workdir) as (base, pid, key):
        queue = ctx.Queue()
        shares = [sessions // processes + (1 if i < sessions % processes else 0) for i in range(processes)]
        with _Sampler(pid) as sampler:
            workers = [
                ctx.Process(
                    target=_worker, args=(base, key, share, turns, ramp_s, i / processes, binary, queue)
                )
                for i, share in enumerate(shares)
                if share
            ]
            for w in workers:
                w.start()
            results: list[WorkerResult] = [queue.get() for _ in workers]
            for w in workers:
                w.join()
    latencies = [v for r in results for v in r.latencies_ms]
    failures = [f for r in results for f in r.failures]
    grown = max(0, sampler.peak_rss - sampler.baseline_rss) / 1e6
    return Level(
        sessions=sessions,
        latencies_ms=latencies,
        server_e2e_ms=[v for r in results for v in r.server_e2e_ms],
        failures=failures,
        cpu_percent_per_session=sampler.cpu_percent / sessions,
        rss_mb_per_session=grown / sessions,
        server_cpu_percent=sampler.cpu_percent,
        server_rss_mb=sampler.peak_rss / 1e6,
        processes=len(shares),
        server_cpu_s=sampler.cpu_seconds,
        load_cpu_percent=100.0 * sum(r.cpu_s for r in results) / sampler.wall_seconds,
        machine_busy_percent=sampler.machine_busy_percent,
    )


def default_processes(sessions: int) -> int:
    """Load processes for a level: about 125 clients each, leaving a core to the server."""
    return max(1, min(max(1, (os.cpu_count() or 2) - 1), math.ceil(sessions / 125)))


def section(
    levels: Sequence[Level],
    turns: int,
    binary: bool = False,
    note: str = "",
    floor: TransportFloor | None = None,
) -> str:
    base_p95 = percentile(levels[0].latencies_ms, 95) if levels else float("nan")
    rows = []
    for level in levels:
        p95 = percentile(level.latencies_ms, 95)
        rows.append(
            [
                level.sessions,
                len(level.latencies_ms),
                percentile(level.latencies_ms, 50),
                p95,
                p95 - base_p95,
                percentile(level.server_e2e_ms, 50),
                percentile(level.server_e2e_ms, 95),
                len(level.failures),
                level.server_cpu_percent,
                level.cpu_percent_per_session,
                level.cpu_ms_per_turn,
                level.server_rss_mb,
                level.rss_mb_per_session,
                level.processes,
                level.load_cpu_percent,
                level.machine_busy_percent,
            ]
        )
    text = (
        "Live sessions on one orchestrator process (`avatar serve orchestrator --instant-engines`), "
        "load from separate processes over the real WebSocket protocol (microphone audio as "
        f"{'binary audio frames' if binary else 'JSON + base64'}; reply audio "
        f"{'binary audio frames, negotiated with `?audio=binary`' if binary else 'JSON + base64'}); every "
        f"session streams at real time, {turns} turns of 1 s of tone then silence. Latency = end of "
        "speech -> first reply audio at the client, ms; it includes the instant engines' own ~300 ms "
        f"endpoint wait, the same at every level. Target: added P95 <= {TARGET_ADDED_P95_MS:g} ms, "
        "0 failed. `server e2e` is the server's own view (end of speech -> first audio chunk queued, from "
        "`turn_completed.latency_ms.e2e`), without the transport or the clients. "
        "CPU in per cent of one core over the run, and the server's CPU time per turn (comparable between "
        "runs of different length); RSS growth over the idle server. `load CPU %` = the load processes' "
        "own CPU (per cent of one core, all together); `machine busy %` = the share of all the machine's "
        "cores busy over the level (server, load and anything else)." + (f" {note}" if note else "") + "\n\n"
    )
    text += table(
        [
            "sessions",
            "turns",
            "P50",
            "P95",
            "added P95 vs first",
            "server e2e P50",
            "server e2e P95",
            "failed",
            "server CPU %",
            "CPU % / session",
            "server CPU ms / turn",
            "server RSS MB",
            "RSS MB / session",
            "load processes",
            "load CPU %",
            "machine busy %",
        ],
        rows,
    )
    if floor is not None:
        text += (
            f"\n\nTransport floor (`avatar.bench.transport_floor`): a bare FastAPI WebSocket route that only "
            f"receives, served as the orchestrator is, took {floor.cpu_percent:.1f} % of one core for "
            f"{floor.sessions} sessions streaming at real time ({floor.us_per_frame:.0f} us a frame); the "
            "orchestrator's CPU above that is its own work."
        )
    failures = sorted({f for level in levels for f in level.failures})
    if failures:
        text += f"\n\nFailures: {'; '.join(failures)[:500]}"
    return text


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def main(
    levels: Sequence[int],
    turns: int,
    processes: int | None,
    write: bool,
    binary: bool = False,
    note: str = "",
) -> int:
    """Run each level and print (and, with ``write``, record in docs/benchmarks.md) the table."""
    if not levels or any(n < 1 for n in levels):
        raise ValueError("--sessions needs positive session counts, e.g. 1,50,100")
    if turns < 1:
        raise ValueError("--turns must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="avatar-load-"))
    framing = "binary audio frames (?audio=binary)" if binary else "JSON + base64 audio"
    start_load = _loadavg()
    print(f"load: {framing}; load average at start {start_load}", flush=True)
    done: list[Level] = []
    for n in levels:
        level = run_level(n, turns, processes or default_processes(n), workdir, binary)
        done.append(level)
        print(
            f"{n} sessions: P50 {percentile(level.latencies_ms, 50):.1f} ms, "
            f"P95 {percentile(level.latencies_ms, 95):.1f} ms "
            f"(server e2e P95 {percentile(level.server_e2e_ms, 95):.1f} ms), failed {len(level.failures)}, "
            f"server CPU {level.server_cpu_percent:.0f}%, RSS {level.server_rss_mb:.0f} MB, "
            f"load CPU {level.load_cpu_percent:.0f}%, machine busy {level.machine_busy_percent:.0f}%",
            flush=True,
        )
    from avatar.bench import transport_floor

    floor = transport_floor.measure(max(levels))
    print(
        f"transport floor at {floor.sessions} sessions: {floor.cpu_percent:.0f}% of a core "
        f"({floor.us_per_frame:.0f} us a frame)",
        flush=True,
    )
    text = section(done, turns, binary, f"Load average at the start: {start_load}. {note}".strip(), floor)
    print(text)
    if write:
        write_section("load", text)
    return 1 if any(level.failures for level in done) else 0
