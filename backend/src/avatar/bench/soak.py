"""``avatar bench soak --sessions N --minutes M``: does one orchestrator process leak while it talks?

Issue 15, item 7 ("Soak"). The server and the clients are those of ``avatar bench load``
(:mod:`avatar.bench.load`, docs/deploy.md "Load testing"): a real ``avatar serve orchestrator
--instant-engines`` process, and separate load processes whose clients stream their microphone at
real time over the WebSocket protocol (docs/protocol.md). Here every session keeps taking turns
until the run's end instead of for a fixed number of turns.

While they talk, the server is sampled every ``interval`` seconds:

* RSS and open file descriptors from ``/proc/<pid>`` (psutil on the server's PID);
* from its ``/api/v1/metrics`` (docs/deploy.md, "Monitoring"): the event loop's task count
  (``asyncio_tasks``), live sessions and WebSockets, and every gauge that is a queue depth
  (``llm_request_queue_length``, the engines' pending gauges, the storage spool).

Every turn is stored as the app stores it (docs/deploy.md, "Load testing"): rows in a PostgreSQL
server the soak starts beside the orchestrator (the app's embedded server, ``placement=remote`` from
the orchestrator's point of view) and audio as encrypted files under the run's directory, so what
the sessions keep grows on disk (``stored MB``), not in the orchestrator's memory. The orchestrator
runs with ``MALLOC_ARENA_MAX=2`` (docs/deploy.md): glibc otherwise gives each thread that touches
memory (the file writes' thread pool) an arena of its own that it keeps.

The report: the samples as a table over time, then RSS, fd and task growth from the first sample
after warm-up to the last one while talking, the idle server before and after (every session closed:
what is left is leaked), and the failed sessions. Target (issue 15): RSS growth <= 5 % after warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar.bench import load
from avatar.bench.report import table, write_section

TARGET_RSS_GROWTH_PERCENT = 5.0
#: The server keeps a closed session for its reconnect grace (docs/configuration.md,
#: ``AVATAR_SECURITY__RECONNECT_GRACE_S``, 120 s by default) with its tasks; the soak shortens it
#: so that the ``after`` sample sees every session ended, and what is left there is leaked.
RECONNECT_GRACE_S = 2
#: A turn is ~1 s of speech, the reply (~0.8 s) and 1.5 s of pause (see ``avatar.bench.load``): a
#: session never reaches this many before the run's end stops it.
_MAX_TURNS = 1_000_000
#: Gauges read from ``/api/v1/metrics`` besides the queue depths.
_TASKS = "asyncio_tasks"
_SESSIONS = "active_sessions_count"
_SOCKETS = "websocket_connections_active"
#: The orchestrator's allocator: at most this many glibc malloc arenas (docs/deploy.md).
MALLOC_ARENA_MAX = "2"
_QUEUE_WORDS = ("queue", "pending", "spool_records")


@dataclass(frozen=True)
class Sample:
    """The server at one moment of the soak."""

    t_s: float
    phase: str  # "idle" (before the clients), "warm-up", "talking" or "after" (every session closed)
    rss_mb: float
    fds: int
    threads: int
    tasks: int | None
    sessions: int | None
    sockets: int | None
    queues: dict[str, float] = field(default_factory=dict)
    #: MB the sessions stored on disk: the audio files and the database's files (``None``: unknown).
    stored_mb: float | None = None
    #: The machine's 1-minute load average (``os.getloadavg``): how busy the shared cores were.
    load1: float | None = None

    @property
    def queued(self) -> float:
        """Everything waiting in the server's queues (the sum of the queue-depth gauges)."""
        return sum(self.queues.values())


@dataclass
class Soak:
    sessions: int
    minutes: float
    warmup_s: float
    samples: list[Sample]
    turns: int
    failures: list[str]
    processes: int
    after_s: float = RECONNECT_GRACE_S + 5.0
    #: With ``--tracemalloc``: the server's Python allocation growth from the end of warm-up to its
    #: close (:mod:`avatar.infrastructure.memory_probe`), largest sites first.
    allocations: str = ""

    def _phase(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]

    @property
    def window(self) -> tuple[Sample, Sample] | None:
        """The first sample after warm-up and the last one while talking (``None``: too few)."""
        talking = self._phase("talking")
        return (talking[0], talking[-1]) if len(talking) >= 2 else None

    @property
    def rss_growth_percent(self) -> float:
        w = self.window
        return 100.0 * (w[1].rss_mb - w[0].rss_mb) / w[0].rss_mb if w else float("nan")

    @property
    def stored_growth_mb(self) -> float:
        """What the sessions stored on disk after warm-up (MB)."""
        w = self.window
        if w is None or w[0].stored_mb is None or w[1].stored_mb is None:
            return float("nan")
        return w[1].stored_mb - w[0].stored_mb

    def growth(self, what: str) -> float:
        """``fds``, ``tasks`` or ``threads``: last - first over the window after warm-up."""
        w = self.window
        if w is None:
            return float("nan")
        a, b = getattr(w[0], what), getattr(w[1], what)
        return float(b - a) if a is not None and b is not None else float("nan")

    def leftover(self, what: str) -> float:
        """``fds``, ``tasks``, ``threads`` or ``rss_mb``: the closed server minus the idle one."""
        idle, after = self._phase("idle"), self._phase("after")
        if not idle or not after:
            return float("nan")
        a, b = getattr(idle[0], what), getattr(after[-1], what)
        return float(b - a) if a is not None and b is not None else float("nan")


def _gauges(text: str) -> dict[str, float]:
    """The gauges of a Prometheus exposition, summed over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "gauge":
            continue
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def _optional_int(gauges: dict[str, float], name: str) -> int | None:
    value = gauges.get(name)
    return int(value) if value is not None and math.isfinite(value) else None


def disk_bytes(*roots: Path) -> int:
    """The size of every file under ``roots`` (missing ones count 0)."""
    total = 0
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                with contextlib.suppress(OSError):  # removed meanwhile
                    total += os.lstat(os.path.join(folder, name)).st_size
    return total


def sample(process: Any, base: str, t_s: float, phase: str, stored: tuple[Path, ...] = ()) -> Sample:
    """Read the server once: ``/proc`` through psutil, its ``/api/v1/metrics``, and the size of
    what it stored under ``stored`` (the object store's root, the database's files)."""
    import httpx

    gauges: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(f"{base}/api/v1/metrics", timeout=10)
        if response.status_code == 200:
            gauges = _gauges(response.text)
    return Sample(
        t_s=round(t_s, 1),
        phase=phase,
        rss_mb=process.memory_info().rss / 1e6,
        fds=int(process.num_fds()),
        threads=int(process.num_threads()),
        tasks=_optional_int(gauges, _TASKS),
        sessions=_optional_int(gauges, _SESSIONS),
        sockets=_optional_int(gauges, _SOCKETS),
        stored_mb=disk_bytes(*stored) / 1e6 if stored else None,
        load1=os.getloadavg()[0],
        queues={k: v for k, v in sorted(gauges.items()) if any(w in k for w in _QUEUE_WORDS)},
    )


class _Sampler:
    """Samples the server every ``interval`` seconds in a thread while the clients talk."""

    def __init__(
        self,
        process: Any,
        base: str,
        t0: float,
        warmup_until: float,
        interval: float,
        stored: tuple[Path, ...],
    ) -> None:
        self.process, self.base, self.t0, self.stored = process, base, t0, stored
        self.warmup_until, self.interval = warmup_until, interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            phase = "warm-up" if now < self.warmup_until else "talking"
            with contextlib.suppress(Exception):  # a failed read is a missing row, never a crash
                self.samples.append(sample(self.process, self.base, now - self.t0, phase, self.stored))
            next_at += self.interval
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def default_interval(minutes: float) -> float:
    """About 20 samples a run, 1 to 15 s apart."""
    return min(15.0, max(1.0, minutes * 60.0 / 20.0))


def default_warmup(minutes: float) -> float:
    """The first fifth of the run (at most a minute): connects, first allocations, caches filled."""
    return min(60.0, minutes * 60.0 / 5.0)


@contextlib.contextmanager
def postgres(data_dir: Path) -> Iterator[str]:
    """The app's embedded PostgreSQL (docs/deploy.md) in ``data_dir``, its URL while the block runs;
    its supervisor lives on an event loop of its own in a thread of the bench process."""
    from avatar.infrastructure.database.embedded import EmbeddedPostgres, start_embedded_postgres

    ready: list[EmbeddedPostgres | BaseException] = []
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        try:
            embedded = await start_embedded_postgres(data_dir)
        except BaseException as exc:  # handed to the caller's thread
            ready.append(exc)
            started.set()
            return
        ready.append(embedded)
        started.set()
        try:
            await asyncio.to_thread(stop.wait)  # the supervisor's task runs meanwhile
        finally:
            await embedded.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    started.wait()
    if isinstance(ready[0], BaseException):
        thread.join()
        raise RuntimeError(f"PostgreSQL did not start: {ready[0]}") from ready[0]
    try:
        yield ready[0].url
    finally:
        stop.set()
        thread.join(60)


def run(
    sessions: int,
    minutes: float,
    workdir: Path,
    processes: int | None = None,
    interval: float | None = None,
    warmup_s: float | None = None,
    after_s: float = RECONNECT_GRACE_S + 5.0,
    tracemalloc: bool = False,
) -> Soak:
    """One soak: a fresh server, ``sessions`` clients talking for ``minutes``, sampled over time."""
    import psutil

    if sessions < 1 or not minutes > 0:
        raise ValueError("--sessions and --minutes must be positive")
    duration = minutes * 60.0
    interval = interval or default_interval(minutes)
    warmup_s = default_warmup(minutes) if warmup_s is None else warmup_s
    processes = max(1, min(processes or load.default_processes(sessions), sessions))
    ramp_s = min(5.0, 0.02 * sessions)  # as in ``avatar bench load``
    ctx = multiprocessing.get_context("spawn")
    database = workdir / "postgres"
    stored = (workdir / "objects", database)
    probe = workdir / "tracemalloc.txt"
    with (
        postgres(database) as url,
        load._server(workdir, _server_env(url, probe if tracemalloc else None, warmup_s)) as (base, pid, key),
    ):
        server = psutil.Process(pid)
        samples = [sample(server, base, 0.0, "idle", stored)]
        queue = ctx.Queue()
        shares = [sessions // processes + (1 if i < sessions % processes else 0) for i in range(processes)]
        t0 = time.monotonic()
        stop_at = t0 + duration  # CLOCK_MONOTONIC: the same clock in every process of the machine
        workers = [
            ctx.Process(
                target=load._worker,
                args=(base, key, share, _MAX_TURNS, ramp_s, i / processes, False, queue, stop_at),
            )
            for i, share in enumerate(shares)
            if share
        ]
        with _Sampler(server, base, t0, t0 + warmup_s, interval, stored) as sampler:
            for w in workers:
                w.start()
            results: list[load.WorkerResult] = [queue.get() for _ in workers]
            for w in workers:
                w.join()
        samples += sampler.samples
        time.sleep(after_s)  # the sockets are closed: let the server finish their sessions
        samples.append(sample(server, base, time.monotonic() - t0, "after", stored))
    return Soak(
        sessions=sessions,
        minutes=minutes,
        warmup_s=warmup_s,
        samples=samples,
        turns=sum(len(r.latencies_ms) for r in results),
        failures=[f for r in results for f in r.failures],
        processes=len(workers),
        after_s=after_s,
        allocations=probe.read_text(encoding="utf-8") if tracemalloc and probe.exists() else "",
    )


def _server_env(database_url: str, probe: Path | None = None, mark_s: float = 60.0) -> dict[str, str]:
    """The soak's orchestrator: short reconnect grace, rows in ``database_url``, few malloc arenas,
    and with ``probe`` its allocations traced (docs/deploy.md, "Load testing")."""
    from avatar.bootstrap import INSTANT_TRACEMALLOC_ENV, INSTANT_TRACEMALLOC_MARK_ENV

    env = {
        "AVATAR_SECURITY__RECONNECT_GRACE_S": str(RECONNECT_GRACE_S),
        "AVATAR_DATABASE__PLACEMENT": "remote",
        "AVATAR_DATABASE__URL": database_url,
        "MALLOC_ARENA_MAX": MALLOC_ARENA_MAX,
    }
    if probe is not None:
        env[INSTANT_TRACEMALLOC_ENV] = str(probe)
        env[INSTANT_TRACEMALLOC_MARK_ENV] = str(mark_s)
    return env


def _top_sites(report: str, sites: int) -> str:
    """The first ``sites`` entries of a probe report (an entry: its size line and its frames)."""
    out: list[str] = []
    for line in report.splitlines():
        if not line.startswith(" ") and len([x for x in out if not x.startswith(" ")]) == sites:
            break
        out.append(line)
    return "\n".join(out)


def _n(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"


def section(soak: Soak, note: str = "") -> str:
    """The ``soak`` section of docs/benchmarks.md."""
    rows = [
        [
            f"{s.t_s:.0f}",
            s.phase,
            f"{s.rss_mb:.1f}",
            s.fds,
            s.threads,
            _n(s.tasks),
            _n(s.sessions),
            _n(s.sockets),
            _n(s.queued),
            "-" if s.stored_mb is None else f"{s.stored_mb:.1f}",
            "-" if s.load1 is None else f"{s.load1:.2f}",
        ]
        for s in soak.samples
    ]
    growth = soak.rss_growth_percent
    verdict = (
        "n/a (too few samples after warm-up)"
        if math.isnan(growth)
        else ("within" if growth <= TARGET_RSS_GROWTH_PERCENT else "OVER")
    )
    text = (
        f"{soak.sessions} sessions talking for {soak.minutes:g} min on one orchestrator process "
        "(`avatar serve orchestrator --instant-engines`), the clients of `avatar bench load` in "
        f"{soak.processes} separate load process(es), each session taking turns (1 s of tone, the "
        "reply, 1.5 s of silence) until the end. The server is sampled over time: RSS and open fds "
        "from /proc, `asyncio_tasks`, live sessions, WebSockets and the queue-depth gauges "
        "(summed: `queued`) from `/api/v1/metrics`. Every turn is stored as the app stores it: rows in "
        "a PostgreSQL server beside the orchestrator, audio as encrypted files; `stored MB` is their "
        "size on disk (docs/deploy.md, Load testing). The orchestrator runs with "
        f"`MALLOC_ARENA_MAX={MALLOC_ARENA_MAX}`. `load 1m` is the machine's load average (every "
        "process on it, the clients' included). "
        "`idle` is the server before the clients, "
        f"`after` {soak.after_s:g} s after every session closed (the reconnect grace shortened to "
        f"{RECONNECT_GRACE_S} s: `AVATAR_SECURITY__RECONNECT_GRACE_S`); "
        f"warm-up is the first {soak.warmup_s:g} s. "
        f"Target (issue 15): RSS growth <= {TARGET_RSS_GROWTH_PERCENT:g} % after warm-up, nothing "
        "leaked.\n\n"
    )
    if note:
        text += note.strip() + "\n\n"
    text += table(
        [
            "t (s)",
            "phase",
            "RSS MB",
            "fds",
            "threads",
            "tasks",
            "sessions",
            "sockets",
            "queued",
            "stored MB",
            "load 1m",
        ],
        rows,
    )
    text += "\n\n" + table(
        ["", "value"],
        [
            ["turns answered", soak.turns],
            ["failed sessions", len(soak.failures)],
            [
                f"RSS growth after warm-up (target <= {TARGET_RSS_GROWTH_PERCENT:g} %)",
                f"{_n(round(growth, 2))} % ({verdict})",
            ],
            ["stored on disk after warm-up (MB)", _n(round(soak.stored_growth_mb, 1))],
            ["fd growth after warm-up", _n(soak.growth("fds"))],
            ["task growth after warm-up", _n(soak.growth("tasks"))],
            ["thread growth after warm-up", _n(soak.growth("threads"))],
            ["fds left after close (vs idle)", _n(soak.leftover("fds"))],
            ["tasks left after close (vs idle)", _n(soak.leftover("tasks"))],
            ["RSS MB left after close (vs idle)", _n(round(soak.leftover("rss_mb"), 1))],
        ],
    )
    if soak.allocations:
        text += (
            "\n\nPython allocation growth in the server from the end of warm-up to its close "
            "(`--tracemalloc`; the largest sites, innermost frame last):\n\n```\n"
            + _top_sites(soak.allocations, 6)
            + "\n```"
        )
    failures = sorted(set(soak.failures))
    if failures:
        text += f"\n\nFailures: {'; '.join(failures)[:500]}"
    return text


def main(
    sessions: int,
    minutes: float,
    processes: int | None,
    write: bool,
    interval: float | None = None,
    note: str = "",
    path: Path | None = None,
    tracemalloc: bool = False,
) -> int:
    """Run the soak, print its section and (with ``write``) record it in docs/benchmarks.md."""
    workdir = Path(tempfile.mkdtemp(prefix="avatar-soak-"))
    soak = run(sessions, minutes, workdir, processes, interval, tracemalloc=tracemalloc)
    text = section(soak, note)
    print(text, flush=True)
    if write:
        if path is None:
            write_section("soak", text)
        else:
            write_section("soak", text, path)
    return 1 if soak.failures else 0
