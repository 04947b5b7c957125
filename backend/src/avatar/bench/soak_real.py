"""``avatar bench soak --real``: the embedded default with its real models, kept talking at the
CPU's capacity (issue 15, item 7, the second half).

The server is what a newcomer runs: ``avatar up`` (README), in a data directory of the run's own, so
its children are the real ones: the llama.cpp server, the embedded PostgreSQL, the prosody worker
processes (docs/resilience.md, "Supervised processes"). Only the reconnect grace is shortened (so the
``after`` sample sees every session ended), the llama.cpp server takes any free port, and the
recognizer is told the clips' language (English).

The clients are those of ``avatar bench conversation --sessions N`` (:mod:`avatar.bench.conversation`):
each speaks LibriVox clips like a live microphone (each 100 ms chunk once it is "recorded"), listens
to every reply to its end, and speaks the next clip, until the run's end. Every client is a user of
its own (``avatar users create``), as people are; the session count defaults to what the stack admits
(``settings.live_session_limit()``, docs/resilience.md "Admission follows the model"). A client whose
turn fails opens a new session (through the real admission, :mod:`avatar.bench.admission`) and goes on.

Sampled over time, as in the instant soak (:mod:`avatar.bench.soak`): the orchestrator's RSS, open
fds, threads, ``asyncio_tasks`` and queue gauges, and for the whole process tree the proportional set
size by kind of process (PSS: shared libraries count once), so a leak in a child shows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.bench import load, soak
from avatar.bench.admission import Admission, admitted
from avatar.bench.conversation import CrowdLevel, Tally, TurnResult, _speak_and_wait
from avatar.bench.report import percentile, table, write_section

SECTION = "soak (real engines)"
#: A real turn is seconds of speech, a reply of several seconds listened to its end: a turn that has
#: not been answered in this long is counted as failed and the client starts a new session.
TURN_TIMEOUT_S = 180.0
#: The models load, the llama.cpp server starts and warms the persona's prompt (docs/deploy.md).
START_TIMEOUT_S = 600.0
#: After a failed session, a client waits this long before it asks for a new one.
RETRY_PAUSE_S = 5.0
#: The process kinds the stack's PSS is split into.
KINDS = ("orchestrator", "llama.cpp server", "postgres", "worker processes")


def default_warmup(minutes: float) -> float:
    """The first fifth of the run, at most two minutes: the first turns load the models' pages, fill
    the prompt cache and the connection pool."""
    return min(120.0, minutes * 60.0 / 5.0)


@dataclass(frozen=True)
class TimedTurn:
    """A turn and when (seconds since the clients started) its reply ended."""

    at_s: float
    turn: TurnResult


@dataclass
class RealSoak:
    sessions: int
    minutes: float
    warmup_s: float
    samples: list[soak.Sample]
    #: PSS MiB by kind of process, one dict per sample (same order as ``samples``).
    parts: list[dict[str, float]]
    turns: list[TimedTurn]
    tally: Tally
    fallbacks: frozenset[str]
    after_s: float = soak.RECONNECT_GRACE_S + 5.0
    #: Supervised child restarts the server counted (``supervised_restarts_total``) by its close.
    restarts: float = 0.0

    @property
    def base(self) -> soak.Soak:
        """The instant soak's arithmetic over the orchestrator's own samples."""
        return soak.Soak(
            self.sessions, self.minutes, self.warmup_s, self.samples, len(self.turns), self.tally.failed, 1
        )

    def stack_mb(self, i: int) -> float:
        return sum(self.parts[i].values())

    @property
    def stack_growth_percent(self) -> float:
        """The whole tree's PSS, first sample after warm-up -> last one while talking."""
        talking = [i for i, s in enumerate(self.samples) if s.phase == "talking"]
        if len(talking) < 2 or not self.stack_mb(talking[0]):
            return float("nan")
        first, last = self.stack_mb(talking[0]), self.stack_mb(talking[-1])
        return 100.0 * (last - first) / first

    def real_replies(self) -> int:
        said = Tally([t.turn for t in self.turns])
        return CrowdLevel(self.sessions, said, len(self.turns), self.fallbacks).real_replies

    def busy(self) -> int:
        return sum(1 for t in self.turns for code in t.turn.notices if code == "BUSY")

    def v2v(self, start_s: float, end_s: float) -> list[float]:
        return [t.turn.total_ms for t in self.turns if start_s <= t.at_s < end_s]


def _kind(proc: Any, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "orchestrator"
    line = " ".join(proc.cmdline())
    if "llama_cpp.server" in line:
        return "llama.cpp server"
    if proc.name().startswith("postgres") or line.startswith("postgres"):
        return "postgres"
    return "worker processes"


def stack_processes(root_pid: int, data_dir: Path) -> list[Any]:
    """The orchestrator, every process it started, and the embedded PostgreSQL (``pg_ctl`` detaches
    it, so it is found by its data directory) with its backends."""
    import psutil

    roots = [psutil.Process(root_pid)]
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or [])
            if str(data_dir) in line and "postgres" in line and proc.pid != root_pid:
                roots.append(proc)
    seen: dict[int, Any] = {}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for proc in [root, *root.children(recursive=True)]:
                seen.setdefault(proc.pid, proc)
    return list(seen.values())


def stack_pss(root_pid: int, data_dir: Path) -> dict[str, float]:
    """PSS MiB of the stack by kind of process (:data:`KINDS`)."""
    import psutil

    parts = dict.fromkeys(KINDS, 0.0)
    for proc in stack_processes(root_pid, data_dir):
        with contextlib.suppress(psutil.Error):
            full = proc.memory_full_info()
            kind = _kind(proc, root_pid)
            parts[kind] = parts.get(kind, 0.0) + getattr(full, "pss", full.rss) / 2**20
    return parts


class _Sampler(threading.Thread):
    """Samples the server and its process tree every ``interval`` seconds while the clients talk."""

    def __init__(
        self, pid: int, base: str, data_dir: Path, t0: float, warmup_until: float, interval: float
    ) -> None:
        import psutil

        super().__init__(daemon=True)
        self.server, self.pid, self.base, self.data_dir = psutil.Process(pid), pid, base, data_dir
        self.t0, self.warmup_until, self.interval = t0, warmup_until, interval
        self.samples: list[soak.Sample] = []
        self.parts: list[dict[str, float]] = []
        self._halt = threading.Event()

    def take(self, phase: str) -> None:
        now = time.monotonic()
        with contextlib.suppress(Exception):  # a failed read is a missing row, never a crash
            parts = stack_pss(self.pid, self.data_dir)
            self.samples.append(soak.sample(self.server, self.base, now - self.t0, phase, (self.data_dir,)))
            self.parts.append(parts)

    def run(self) -> None:
        next_at = time.monotonic() + self.interval  # the clients' first moment is the idle sample
        while not self._halt.wait(max(0.0, next_at - time.monotonic())):
            self.take("warm-up" if time.monotonic() < self.warmup_until else "talking")
            next_at += self.interval

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AVATAR_DATA_DIR": str(workdir / "data"),
        "AVATAR_DATABASE__DATA_DIR": str(workdir / "data" / "pgdata"),
        "AVATAR_OBJECT_STORE__ROOT": str(workdir / "data" / "objects"),
        "AVATAR_LLM__PORT": "0",
        "AVATAR_SECURITY__RECONNECT_GRACE_S": str(soak.RECONNECT_GRACE_S),
        "AVATAR_ASR__LANGUAGE": os.environ.get("AVATAR_ASR__LANGUAGE", "en"),
    }


def _avatar() -> str:
    return str(Path(sys.executable).with_name("avatar"))


@contextlib.contextmanager
def embedded_stack(workdir: Path) -> Iterator[tuple[str, int]]:
    """``avatar up`` on a free port, everything it keeps (database, audio, keys) under ``workdir``;
    ``(base URL, its PID)`` once it is ready. Stopped by its PID (SIGTERM: it stops its children),
    killed if it does not exit in time."""
    port = load._free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    cmd = [_avatar(), "up", "--port", str(port)]
    log = workdir / "avatar-up.log"
    with load.serving(cmd, _env(workdir), log, base, ready_timeout_s=START_TIMEOUT_S, stop_grace_s=60) as pid:
        yield base, pid


def create_user(workdir: Path, name: str) -> str:
    """A user of the running stack, made as an operator makes one (``avatar users create``, which
    shares the embedded PostgreSQL); returns its API key."""
    done = subprocess.run(
        [_avatar(), "users", "create", name],
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"avatar users create failed: {done.stderr[-1000:]}")
    return done.stdout.strip().splitlines()[-1]


async def _client(
    base: str,
    key: str,
    clips: Sequence[tuple[bytes, str]],
    offset: int,
    t0: float,
    stop_at: float,
    turns: list[TimedTurn],
    tally: Tally,
) -> None:
    """One person: speaks clip after clip until ``stop_at``; a failed turn ends the session and a new
    one is asked for (the failure is counted)."""
    spoken = offset
    while time.monotonic() < stop_at:
        admission = Admission()
        tally.admissions.append(admission)
        try:
            async with admitted(base, key, admission) as client:
                while time.monotonic() < stop_at:
                    pcm, reference = clips[spoken % len(clips)]
                    spoken += 1
                    turn = await _speak_and_wait(client, pcm, TURN_TIMEOUT_S, reference)
                    turns.append(TimedTurn(time.monotonic() - t0, turn))
        except Exception as exc:
            tally.failed.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, stop_at - time.monotonic())))


def _restarts(base: str) -> float:
    """``supervised_restarts_total`` summed over the children (0 when unreadable)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(f"{base}/api/v1/metrics", timeout=10)
        return sum(
            s.value
            for family in text_string_to_metric_families(response.text)
            if family.name == "supervised_restarts"
            for s in family.samples
            if s.name.endswith("_total")
        )
    return 0.0


def run(
    sessions: int,
    minutes: float,
    workdir: Path,
    interval: float | None = None,
    warmup_s: float | None = None,
    after_s: float = soak.RECONNECT_GRACE_S + 5.0,
) -> RealSoak:
    """One soak of the embedded default with real models: a fresh ``avatar up``, ``sessions``
    speaking clients for ``minutes``, the server and its process tree sampled over time."""
    from avatar.application.brain import load_persona
    from avatar.application.brain.reply_parser import strip_markup
    from avatar.bench.speech import load_librivox
    from avatar.settings import Settings

    if sessions < 1 or not minutes > 0:
        raise ValueError("--sessions and --minutes must be positive")
    loaded = load_librivox()
    if not loaded:
        raise RuntimeError("pocketsphinx-testdata (LibriVox clips) is not installed")
    clips = [(c.pcm, c.transcript) for c in loaded]
    persona = load_persona(Settings().llm.persona_file)
    fallbacks = frozenset(strip_markup(text).strip() for text in persona.fallback_replies.values())
    interval = interval or soak.default_interval(minutes)
    warmup_s = default_warmup(minutes) if warmup_s is None else warmup_s
    data_dir = workdir / "data"
    turns: list[TimedTurn] = []
    tally = Tally()
    with embedded_stack(workdir) as (base, pid):
        keys = [create_user(workdir, f"soak-{i + 1}") for i in range(sessions)]
        idle = _Sampler(pid, base, data_dir, time.monotonic(), 0.0, interval)
        idle.take("idle")
        t0 = time.monotonic()
        sampler = _Sampler(pid, base, data_dir, t0, t0 + warmup_s, interval)
        sampler.samples, sampler.parts = idle.samples, idle.parts
        sampler.start()
        try:
            step = max(1, len(clips) // sessions)  # neighbours speak different clips
            asyncio.run(
                _all(base, keys, clips, step, t0, t0 + minutes * 60.0, turns, tally),
            )
        finally:
            sampler.stop()
        time.sleep(after_s)  # every socket is closed: let the server end the sessions
        sampler.take("after")
        restarts = _restarts(base)
    return RealSoak(
        sessions=sessions,
        minutes=minutes,
        warmup_s=warmup_s,
        samples=sampler.samples,
        parts=sampler.parts,
        turns=turns,
        tally=tally,
        fallbacks=fallbacks,
        after_s=after_s,
        restarts=restarts,
    )


async def _all(
    base: str,
    keys: Sequence[str],
    clips: Sequence[tuple[bytes, str]],
    step: int,
    t0: float,
    stop_at: float,
    turns: list[TimedTurn],
    tally: Tally,
) -> None:
    await asyncio.gather(
        *(_client(base, key, clips, i * step, t0, stop_at, turns, tally) for i, key in enumerate(keys))
    )


def _f(v: float, digits: int = 0) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def section(run: RealSoak, note: str = "") -> str:
    """The ``soak (real engines)`` section of docs/benchmarks.md."""
    base = run.base
    rows = []
    previous_t = float("-inf")
    for s, parts in zip(run.samples, run.parts, strict=True):
        window = run.v2v(previous_t, s.t_s) if s.phase != "idle" else []
        previous_t = s.t_s if s.phase != "idle" else 0.0
        rows.append(
            [
                f"{s.t_s:.0f}",
                s.phase,
                f"{s.rss_mb:.1f}",
                f"{sum(parts.values()):.0f}",
                *(f"{parts.get(k, 0.0):.0f}" for k in KINDS),
                s.fds,
                s.threads,
                soak._n(s.tasks),
                soak._n(s.sessions),
                soak._n(s.queued),
                sum(1 for t in run.turns if t.at_s <= s.t_s) if s.phase != "idle" else 0,
                _f(percentile(window, 50)),
                "-" if s.stored_mb is None else f"{s.stored_mb:.1f}",
                "-" if s.load1 is None else f"{s.load1:.2f}",
            ]
        )
    end = run.minutes * 60.0
    third = (end - run.warmup_s) / 3.0
    early = run.v2v(run.warmup_s, run.warmup_s + third)
    late = run.v2v(end - third, float("inf"))
    turns = len(run.turns)
    text = (
        f"{run.sessions} {'person' if run.sessions == 1 else 'people'} talking for {run.minutes:g} min "
        "to the embedded default with its real "
        "models (`avatar up` in a data directory of its own: Whisper base, SmolLM2 on the llama.cpp "
        "server, Piper, the prosody worker processes, the embedded PostgreSQL; the session count is "
        "what the stack admits). Each is a user of its own and speaks LibriVox clips like a live "
        "microphone, listens to every reply to its end and speaks the next clip; a failed turn ends "
        "its session and a new one is asked for. Sampled over time: the orchestrator's RSS, open "
        "fds, threads, `asyncio_tasks`, live sessions and queue gauges (summed: `queued`); the "
        "proportional set size (PSS, MiB; shared libraries count once) of the whole process tree "
        "and of each kind of process; turns answered so far and the voice-to-voice P50 of the "
        "turns since the previous sample (ms); `stored MB`: the data directory (database and "
        f"audio). Warm-up: the first {run.warmup_s:g} s; `after`: {run.after_s:g} s after every "
        f"session closed (reconnect grace {soak.RECONNECT_GRACE_S} s).\n\n"
    )
    if note:
        text += note.strip() + "\n\n"
    text += table(
        [
            "t (s)",
            "phase",
            "orch RSS MB",
            "stack PSS",
            "orch PSS",
            "llama PSS",
            "postgres PSS",
            "workers PSS",
            "fds",
            "threads",
            "tasks",
            "sessions",
            "queued",
            "turns",
            "V2V P50",
            "stored MB",
            "load 1m",
        ],
        rows,
    )
    real = run.real_replies()
    text += "\n\n" + table(
        ["", "value"],
        [
            ["turns answered", turns],
            ["real model replies", f"{real} ({_f(100.0 * real / turns if turns else math.nan)} %)"],
            ["turns told BUSY", run.busy()],
            ["failed turns (a new session followed)", len(run.tally.failed)],
            ["sessions opened", len(run.tally.admissions)],
            ["supervised child restarts", f"{run.restarts:g}"],
            [
                "V2V P50 / P95, first third after warm-up (ms)",
                f"{_f(percentile(early, 50))} / {_f(percentile(early, 95))} (n={len(early)})",
            ],
            [
                "V2V P50 / P95, last third (ms)",
                f"{_f(percentile(late, 50))} / {_f(percentile(late, 95))} (n={len(late)})",
            ],
            ["orchestrator RSS growth after warm-up", f"{_f(base.rss_growth_percent, 2)} %"],
            ["stack PSS growth after warm-up", f"{_f(run.stack_growth_percent, 2)} %"],
            ["stored on disk after warm-up (MB)", _f(base.stored_growth_mb, 1)],
            ["fd growth after warm-up", soak._n(base.growth("fds"))],
            ["task growth after warm-up", soak._n(base.growth("tasks"))],
            ["fds left after close (vs idle)", soak._n(base.leftover("fds"))],
            ["tasks left after close (vs idle)", soak._n(base.leftover("tasks"))],
            ["orchestrator RSS MB left after close (vs idle)", _f(base.leftover("rss_mb"), 1)],
        ],
    )
    failures = sorted(set(run.tally.failed))
    if failures:
        text += f"\n\nFailures: {'; '.join(failures)[:500]}"
    return text


def main(
    sessions: int | None,
    minutes: float,
    write: bool,
    interval: float | None = None,
    note: str = "",
    path: Path | None = None,
) -> int:
    """Run the real-engine soak, print its section and (with ``write``) record it."""
    from avatar.settings import Settings

    count = sessions or Settings().live_session_limit()
    workdir = Path(tempfile.mkdtemp(prefix="avatar-soak-real-"))
    result = run(count, minutes, workdir, interval)
    text = section(result, note)
    print(text, flush=True)
    if write:
        if path is None:
            write_section(SECTION, text)
        else:
            write_section(SECTION, text, path)
    real = result.real_replies()
    return 0 if result.turns and not result.tally.failed and real == len(result.turns) else 1
