"""``avatar bench conversation``: voice-to-voice latency with real models, and capacity with
instant fake engines, both through a real uvicorn server and real WebSocket clients.

Voice-to-voice = end of the user's speech (the client sends its last speech chunk) -> the first
reply audio chunk read by the client. The client streams like a microphone: speech in 100 ms
chunks at real time, then silence until the reply is complete.

The per-stage breakdown comes from the server's turn record (``turn_completed.latency_ms``):
``endpoint`` (silence the VAD waited for) + ``asr_final`` (final decode) + ``first_clause`` (final
transcript -> first speakable clause) + ``tts_first_chunk`` (synthesis of the first audio).
Orchestration overhead = client total minus those stages: transport both ways, queue hand-offs,
event-loop waits.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar.bench.report import median, percentile, table, write_section
from avatar.settings import REPO_ROOT, Settings

#: Stages that add up to the voice-to-voice path (``llm_ttft`` lies inside ``first_clause``).
PATH_STAGES = ("endpoint", "asr_final", "first_clause", "tts_first_chunk")
REPORTED = ("endpoint", "asr_final", "llm_ttft", "first_clause", "tts_first_chunk", "e2e")
CHUNK_MS = 100
CAPACITY_NOTE = (
    "The clients run in the server's process and event loop (one interpreter, 2 shared cores), so "
    "at high session counts part of the overhead is the clients' own work (JSON and base64 of every "
    "audio chunk both ways); `server e2e` is the orchestrator's own end of speech -> first audio."
)


def _harness() -> Any:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.e2e import harness

    return harness


@dataclass
class TurnResult:
    total_ms: float
    stages: dict[str, float]

    @property
    def overhead_ms(self) -> float:
        return self.total_ms - sum(self.stages.get(s, 0.0) for s in PATH_STAGES)


@dataclass
class Tally:
    turns: list[TurnResult] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def totals(self) -> list[float]:
        return [t.total_ms for t in self.turns]

    def stage(self, name: str) -> list[float]:
        return [t.stages[name] for t in self.turns if name in t.stages]

    def overheads(self) -> list[float]:
        return [t.overhead_ms for t in self.turns]


async def _microphone_silence(client: Any) -> None:
    silence = bytes(16000 * CHUNK_MS // 1000 * 2)
    while True:
        await asyncio.sleep(CHUNK_MS / 1000.0)
        await client.send_audio(silence)


async def _speak_and_wait(client: Any, pcm: bytes, timeout_s: float) -> TurnResult:
    """Stream one utterance at real time, keep the microphone open, time the first reply audio."""
    loop = asyncio.get_running_loop()
    step = 16000 * CHUNK_MS // 1000 * 2
    starts = list(range(0, len(pcm), step))
    next_at = loop.time()
    speech_end = next_at
    for i, start in enumerate(starts):
        await client.send_audio(pcm[start : start + step], 16000, timestamp=i * CHUNK_MS)
        speech_end = loop.time()
        next_at += CHUNK_MS / 1000.0
        if i < len(starts) - 1:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    mic = asyncio.create_task(_microphone_silence(client))
    turn_id: str | None = None
    first_audio: float | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await client.recv()
                kind = message["type"]
                if kind == "turn_started" and turn_id is None:
                    turn_id = message["turn_id"]
                elif kind == "audio_chunk" and message.get("turn_id") == turn_id and first_audio is None:
                    first_audio = loop.time()
                elif kind == "interrupted" and message.get("turn_id") == turn_id:
                    raise RuntimeError(f"the reply was interrupted (heard {message.get('heard_text')!r})")
                elif kind == "error":
                    raise RuntimeError(f"{message.get('code')}: {message.get('message')}")
                elif kind == "turn_completed" and message.get("turn_id") == turn_id:
                    if first_audio is None:
                        raise RuntimeError("the turn completed without audio")
                    stages = {k: float(v) for k, v in message["latency_ms"].items()}
                    return TurnResult((first_audio - speech_end) * 1000.0, stages)
    finally:
        mic.cancel()
        await asyncio.gather(mic, return_exceptions=True)


async def _conversation(
    harness: Any, base: str, clips: Sequence[bytes], tally: Tally, timeout_s: float
) -> None:
    """One session, one turn per clip (the history grows as in a real conversation)."""
    created = await harness.create_session(base)
    async with harness.Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        for pcm in clips:
            try:
                tally.turns.append(await _speak_and_wait(client, pcm, timeout_s))
            except Exception as exc:
                tally.failed.append(f"{type(exc).__name__}: {exc}")
                return


def _tone(ms: int, sr: int = 16000) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


async def _capacity(levels: Sequence[int]) -> list[tuple[int, Tally]]:
    """Every session streams 1 s of tone + microphone silence at real time, concurrently.

    The fake recognizer ignores silence (a crude VAD) and endpoints after 1 s of tone, so the
    endpoint wait is zero and what is measured is the orchestrator itself under load.
    """
    from avatar.infrastructure.clock import SystemClock
    from avatar.presentation.app import create_app

    harness = _harness()
    from tests.fakes import EnergyGatedRecognizer, fake_container

    rows = []
    pcm = _tone(1000)
    for n in levels:
        settings = Settings(environment="test")
        settings.conversation.max_sessions = n + 1
        container = fake_container(
            settings, recognizer=EnergyGatedRecognizer(utterance_ms=1000), clock=SystemClock()
        )
        tally = Tally()
        async with harness.running_server(create_app(settings, container)) as base:
            await asyncio.gather(*[_conversation(harness, base, [pcm], tally, 60) for _ in range(n)])
        rows.append((n, tally))
    return rows


async def _real(settings: Settings, turns: int, per_session: int) -> Tally:
    from avatar.bootstrap import build_container
    from avatar.presentation.app import create_app

    harness = _harness()
    from tests.support.audio import load_librivox

    clips = [c.pcm for c in load_librivox()]
    if not clips:
        raise RuntimeError("pocketsphinx-testdata (LibriVox clips) is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="avatar-bench-"))
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.max_tokens = 40
    settings.asr.language = settings.asr.language or "en"
    settings.conversation.max_sessions = max(settings.conversation.max_sessions, turns)
    container = await build_container(settings)
    tally = Tally()
    try:
        async with harness.running_server(create_app(settings, container)) as base:
            for first in range(0, turns, per_session):
                batch = [clips[i % len(clips)] for i in range(first, min(turns, first + per_session))]
                await _conversation(harness, base, batch, tally, 180)
    finally:
        await container.aclose()
    return tally


def _row(name: str, values: Sequence[float]) -> list[object]:
    return [name, len(values), median(values), percentile(values, 50), percentile(values, 95)]


def _real_section(tally: Tally) -> str:
    rows = [_row("voice-to-voice (client)", tally.totals())]
    rows += [_row(stage, tally.stage(stage)) for stage in REPORTED]
    rows.append(_row("orchestration overhead", tally.overheads()))
    text = (
        f"Voice-to-voice latency over {len(tally.turns)} turns with real models (LibriVox speech "
        "streamed at real time, then microphone silence; end of speech -> first reply audio chunk "
        "at the client), ms. Stages from the turn records; overhead = total - (endpoint + "
        "asr_final + first_clause + tts_first_chunk); `e2e` is the server's own view.\n\n"
    )
    text += table(["measure", "n", "median", "P50", "P95"], rows)
    if tally.failed:
        text += f"\n\nFailed turns: {len(tally.failed)} ({'; '.join(sorted(set(tally.failed)))[:300]})."
    return text


def _capacity_section(capacity: list[tuple[int, Tally]]) -> str:
    base_p95 = percentile(capacity[0][1].totals(), 95)
    rows = []
    for n, tally in capacity:
        totals = tally.totals()
        rows.append(
            [
                n,
                percentile(totals, 50),
                percentile(totals, 95),
                percentile(totals, 95) - base_p95,
                median(tally.stage("e2e")),
                median(tally.stage("llm_ttft")),
                median(tally.overheads()),
                len(tally.failed),
            ]
        )
    return (
        "Capacity with instant fake engines (real clock; every session streams 1 s of audio at "
        "real time concurrently, then microphone silence; end of speech -> first reply audio at "
        "the client), ms:\n\n"
        + table(
            [
                "sessions",
                "P50",
                "P95",
                "added P95 vs 1",
                "server e2e median",
                "llm_ttft median",
                "overhead median",
                "failed",
            ],
            rows,
        )
        + "\n\n"
        + CAPACITY_NOTE
    )


def main(settings: Settings, quick: bool) -> int:
    turns = 20
    levels = (1, 5, 10) if quick else (1, 5, 10, 20)
    parts = []
    try:
        tally = asyncio.run(_real(settings, turns, per_session=5))
    except Exception as exc:
        print(f"voice-to-voice with real models skipped: {type(exc).__name__}: {exc}")
        parts.append(f"Voice-to-voice with real models: not measured ({type(exc).__name__}: {exc}).")
    else:
        parts.append(_real_section(tally))
        print(parts[-1])
    parts.append(_capacity_section(asyncio.run(_capacity(levels))))
    print(parts[-1])
    write_section("conversation", "\n\n".join(parts))
    return 0
