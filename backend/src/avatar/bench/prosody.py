"""``avatar bench prosody``: analysis cost, and whether analyses running alongside delay replies.

1. Analysis time per 10 s of real speech (LibriVox when installed, else a synthetic voice), full
   (Praat + eGeMAPSv02) and Praat only, in this process.
2. Reply latency: a simulated reply path on the event loop (an LLM-like stream: 40 tokens, each a
   10 ms wait plus ~1 ms of Python work, as tokenizing/chunking/serializing costs) measured alone,
   with analyses running back to back in the worker *processes* the product uses, and (for
   comparison) in worker *threads* of the same process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from avatar.bench.report import machine, median, percentile, table, write_section
from avatar.settings import Settings
from avatar_prosody.analyzer import ExecutorKind, ProsodyEngine, analyze
from avatar_prosody.synth import synthetic_voice

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
RATE = 16000
TOKENS = 40


def ten_seconds_of_speech() -> tuple[npt.NDArray[np.float32], str]:
    """10 s of real speech (LibriVox clips joined) or, without them, of a synthetic voice."""
    parts: list[npt.NDArray[np.float32]] = []
    for path in sorted(LIBRIVOX_DIR.glob("*.wav")):
        data, rate = sf.read(path, dtype="float32")
        if rate == RATE:
            parts.append(np.asarray(data, dtype=np.float32))
    if parts:
        joined = np.concatenate(parts)
        while joined.size < 10 * RATE:
            joined = np.concatenate([joined, joined])
        return joined[: 10 * RATE], "LibriVox speech"
    return synthetic_voice(10.0), "synthetic voice"


def _busy_work() -> int:
    total = 0
    for i in range(4000):  # ~1 ms of interpreter work per token on this class of CPU
        total += i * i % 7
    return total


async def simulated_reply() -> tuple[float, float]:
    """Total time of one reply and its largest gap between tokens, in ms."""
    start = last = time.perf_counter()
    worst = 0.0
    for _ in range(TOKENS):
        await asyncio.sleep(0.01)
        _busy_work()
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    return (time.perf_counter() - start) * 1000.0, worst * 1000.0


async def _replies(count: int) -> tuple[list[float], list[float]]:
    totals, gaps = [], []
    for _ in range(count):
        total, gap = await simulated_reply()
        totals.append(total)
        gaps.append(gap)
    return totals, gaps


async def _with_analyses(
    kind: ExecutorKind | None, workers: int, audio: npt.NDArray[np.float32], replies: int
) -> tuple[list[float], list[float], int]:
    if kind is None:
        totals, gaps = await _replies(replies)
        return totals, gaps, 0
    engine = ProsodyEngine(workers, executor=kind)
    await engine.warm_up()
    stop = asyncio.Event()
    done = 0

    async def load() -> None:
        nonlocal done
        while not stop.is_set():
            await engine.analyze(audio, RATE)
            done += 1

    loaders = [asyncio.create_task(load()) for _ in range(workers)]
    try:
        await asyncio.sleep(0.5)  # analyses under way before the first reply
        totals, gaps = await _replies(replies)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
        await engine.aclose()
    return totals, gaps, done


def main(settings: Settings, quick: bool) -> int:
    audio, source = ten_seconds_of_speech()
    runs = 3 if quick else 10
    analyze(audio[: RATE * 2], RATE)  # load the libraries once, outside the timings
    full, praat = [], []
    for _ in range(runs):
        t = time.perf_counter()
        analyze(audio, RATE)
        full.append((time.perf_counter() - t) * 1000.0)
        t = time.perf_counter()
        analyze(audio, RATE, egemaps=False)
        praat.append((time.perf_counter() - t) * 1000.0)
    print(
        f"analysis of 10 s ({source}): full median {median(full):.0f} ms, Praat only {median(praat):.0f} ms"
    )

    workers = max(1, settings.prosody.workers)
    replies = 5 if quick else 20
    rows: list[list[object]] = []
    baseline_p50 = float("nan")
    conditions: list[tuple[str, ExecutorKind | None]] = [
        ("no analyses", None),
        (f"{workers} worker process(es) busy", "process"),
        (f"{workers} worker thread(s) busy (comparison)", "thread"),
    ]
    for label, kind in conditions:
        totals, gaps, done = asyncio.run(_with_analyses(kind, workers, audio, replies))
        p50 = percentile(totals, 50)
        if kind is None:
            baseline_p50 = p50
        rows.append(
            [
                label,
                p50,
                percentile(totals, 95),
                percentile(gaps, 50),
                percentile(gaps, 95),
                p50 / baseline_p50,
                done,
            ]
        )
        print(
            f"{label}: reply P50 {p50:.1f} ms, P95 {percentile(totals, 95):.1f} ms, "
            f"token gap P95 {percentile(gaps, 95):.1f} ms, analyses during replies {done}"
        )

    body = "\n".join(
        [
            f"Audio: 10 s of {source}, 16 kHz. {runs} runs each; machine: {machine()}.",
            "",
            table(
                ["analysis of 10 s", "median ms", "P95 ms", "real-time factor"],
                [
                    ["Praat + eGeMAPSv02 (full)", median(full), percentile(full, 95), median(full) / 10000.0],
                    ["Praat only", median(praat), percentile(praat, 95), median(praat) / 10000.0],
                ],
            ),
            "",
            f"Reply latency: a simulated reply stream ({TOKENS} tokens, 10 ms wait + ~1 ms Python work each; "
            f"{replies} replies per row) on the event loop while 10 s analyses run back to back "
            f"(`settings.prosody.workers` = {workers}).",
            "",
            table(
                [
                    "condition",
                    "reply P50 ms",
                    "reply P95 ms",
                    "token gap P50 ms",
                    "token gap P95 ms",
                    "P50 vs none",
                    "analyses done",
                ],
                rows,
            ),
            "",
            "Worker processes keep Praat (which holds the GIL while it computes) off the interpreter that "
            "streams replies; the thread row shows what running it in-process would cost. On a machine "
            "with few cores the remaining difference is CPU contention between processes.",
        ]
    )
    write_section("prosody", body)
    return 0
