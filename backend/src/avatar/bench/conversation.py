"""``avatar bench conversation``: voice-to-voice latency with real models, and capacity with
instant fake engines, both through a real uvicorn server and real WebSocket clients.

Voice-to-voice = end of the user's speech (the last speech chunk sent) -> first reply audio
chunk received by the client. Orchestration overhead = that total minus the pipeline's own
stages (asr_final + first_clause + tts_first_chunk, from ``turn_completed.latency_ms``).
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatar.bench.report import median, percentile, table, write_section
from avatar.settings import REPO_ROOT, Settings

STAGES = ("asr_final", "llm_ttft", "first_clause", "tts_first_chunk", "e2e")


def _harness() -> Any:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.e2e import harness

    return harness


async def _one_turn(harness: Any, base: str, pcm: bytes, *,
                    speed: float = 1.0) -> tuple[float, dict[str, float]]:
    created = await harness.create_session(base)
    async with harness.Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        step = 3200  # 100 ms at 16 kHz
        loop = asyncio.get_running_loop()
        speech_end = loop.time()
        starts = range(0, len(pcm), step)
        for i, start in enumerate(starts):
            await client.send_audio(pcm[start:start + step], 16000, timestamp=i * 100)
            speech_end = loop.time()
            if i < len(starts) - 1:  # receiving starts right after the last chunk (arrival time)
                await asyncio.sleep(0.1 / speed)
        silence = bytes(3200)
        sender = asyncio.create_task(_silence(client, silence))
        try:
            await client.until_type("audio_chunk", timeout_s=120)
            first_audio = client.first_audio_at or asyncio.get_running_loop().time()
            done = await client.until_type("turn_completed", timeout_s=120)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return (first_audio - speech_end) * 1000.0, dict(done["latency_ms"])


async def _silence(client: Any, chunk: bytes) -> None:
    while True:
        await client.send_audio(chunk)
        await asyncio.sleep(0.1)


def _tone(ms: int, sr: int = 16000) -> bytes:
    n = sr * ms // 1000
    return b"".join(int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True)
                    for i in range(n))


async def _capacity(levels: Sequence[int]) -> list[tuple[int, float, float, float, int]]:
    from avatar.presentation.app import create_app

    harness = _harness()
    from tests.fakes import FakeRecognizer, fake_container

    rows = []
    pcm = _tone(1000)
    for n in levels:
        settings = Settings(environment="test")
        settings.conversation.max_sessions = n + 1
        container = fake_container(settings, recognizer=FakeRecognizer(utterance_ms=1000))
        async with harness.running_server(create_app(settings, container)) as base:
            results = await asyncio.gather(*[_one_turn(harness, base, pcm) for _ in range(n)],
                                           return_exceptions=True)
        good = [r for r in results if not isinstance(r, BaseException)]
        ok = [r[0] for r in good]
        ttft = [float(r[1].get("llm_ttft", float("nan"))) for r in good]
        rows.append((n, percentile(ok, 50), percentile(ok, 95), median(ttft), n - len(ok)))
    return rows


async def _real(settings: Settings, turns: int) -> tuple[list[float], dict[str, list[float]]]:
    from avatar.bootstrap import build_container
    from avatar.presentation.app import create_app

    harness = _harness()
    from tests.support.audio import load_librivox

    clips = load_librivox()
    if not clips:
        raise RuntimeError("pocketsphinx-testdata (LibriVox clips) is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="avatar-bench-"))
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.max_tokens = 40
    settings.asr.language = settings.asr.language or "en"
    container = await build_container(settings)
    totals: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    try:
        async with harness.running_server(create_app(settings, container)) as base:
            for i in range(turns):
                total, latency = await _one_turn(harness, base, clips[i % len(clips)].pcm)
                totals.append(total)
                for stage in STAGES:
                    if stage in latency:
                        stages[stage].append(float(latency[stage]))
    finally:
        await container.aclose()
    return totals, stages


def main(settings: Settings, quick: bool) -> int:
    turns = 20
    levels = (1, 5, 10) if quick else (1, 5, 10, 20)
    lines = []
    try:
        totals, stages = asyncio.run(_real(settings, turns))
    except Exception as exc:
        print(f"voice-to-voice with real models skipped: {type(exc).__name__}: {exc}")
        lines.append(f"Voice-to-voice with real models: not measured ({type(exc).__name__}: {exc}).")
    else:
        own = [stages["asr_final"][i] + stages["first_clause"][i] + stages["tts_first_chunk"][i]
               for i in range(min(len(stages["asr_final"]), len(stages["first_clause"]),
                                  len(stages["tts_first_chunk"]), len(totals)))]
        overhead = [t - s for t, s in zip(totals, own, strict=False)]
        rows: list[list[object]] = [["voice-to-voice (client)", median(totals), percentile(totals, 50),
                                     percentile(totals, 95)]]
        rows += [[s, median(v), percentile(v, 50), percentile(v, 95)] for s, v in stages.items() if v]
        rows.append(["orchestration overhead", median(overhead), percentile(overhead, 50),
                     percentile(overhead, 95)])
        lines.append(f"Voice-to-voice latency over {len(totals)} turns (LibriVox speech streamed at real "
                     "time; end of speech -> first reply audio chunk at the client), ms:\n")
        lines.append(table(["measure", "median", "P50", "P95"], rows))
        print(lines[-1])
    capacity = asyncio.run(_capacity(levels))
    base_p95 = capacity[0][2]
    cap_rows = [[n, p50, p95, p95 - base_p95, ttft, failed] for n, p50, p95, ttft, failed in capacity]
    lines.append("\nCapacity with instant fake engines (every session streams 1 s of audio at real time "
                 "concurrently; end of speech -> first reply audio at the client), ms:\n")
    lines.append(table(["sessions", "P50", "P95", "added P95 vs 1", "llm_ttft median (brain)", "failed"],
                       cap_rows))
    print(lines[-1])
    write_section("conversation", "\n".join(lines))
    return 0
