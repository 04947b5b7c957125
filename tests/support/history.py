"""A conversation held through the real app and socket, for tests of what is kept afterwards
(retention, backups): spoken turns (raw audio stored), replies, HQ audio; waits for the writes."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

from avatar.bootstrap import Container
from tests.e2e.harness import Client, create_session
from tests.support.auth import bearer


def tone(ms: int, sr: int = 16000) -> bytes:
    """PCM16 mono of a 220 Hz tone (loud enough for the fake recognizer to hear speech)."""
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 220 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


async def turns_of(base: str, key: str, sid: str) -> list[dict[str, Any]]:
    """``GET /api/v1/sessions/{sid}/turns`` as the owner of ``key``."""
    async with httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30) as http:
        response = await http.get(f"/api/v1/sessions/{sid}/turns")
        response.raise_for_status()
        turns: list[dict[str, Any]] = response.json()["turns"]
        return turns


async def converse(base: str, key: str, container: Container, turns: int = 2) -> str:
    """A conversation in ``hq`` mode over the real socket; returns the session id once every turn
    has its input audio and its HQ reply stored."""
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "set_tts_mode", "mode": "hq"})
        for _ in range(turns):
            await client.send_audio(tone(500))
            done = await client.until_type("turn_completed", timeout_s=60)
            assert not done["interrupted"] and done["text"]
            # Speak again only once the reply has played out (by the container's fake clock).
            container.clock.advance(30.0)  # type: ignore[attr-defined]
    sid = str(created["session_id"])
    queue: Any = container.queue
    for _ in range(600):
        await queue.drain()
        listed = await turns_of(base, key, sid)
        stored = [
            t
            for t in listed
            if t["transcription"]
            and t["transcription"]["audio_url"]
            and any(a["mode"] == "hq" for a in t["audio"])
        ]
        if len(stored) >= turns:
            return sid
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {turns} turns of {sid} were not stored: {listed}")
