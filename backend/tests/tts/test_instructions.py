"""A style instruction travels the TTS port to an engine that follows one, in both placements:
in-process and through the TTS service's HTTP API (``avatar_tts.app``), where CosyVoice's instruct
mode would take it. CosyVoice cannot run here (no GPU, no weights): a small engine that follows
instructions stands in for it; the service, the app and both adapters are the real ones."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np

from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.domain.models import TTSMode
from avatar.infrastructure.tts import EmbeddedSynthesizer, RemoteSynthesizer
from avatar_tts.app import create_app
from avatar_tts.engine import FloatAudio, InstructableEngine, Reference, Tier, Voice
from avatar_tts.engines.espeak import EspeakEngine
from avatar_tts.service import ServiceConfig, TTSService
from tests.support.net import serve_in_thread


class StyledEngine:
    """A fast-tier engine that follows instructions and remembers them (a tone per clause)."""

    name = "styled"
    tier = Tier.FAST
    can_clone = False
    follows_instructions = True
    estimate_mb = 0.0
    sample_rate = 16000

    def __init__(self) -> None:
        self.instructions: list[str | None] = []

    def voices(self) -> list[Voice]:
        return [Voice("styled:one", "one", self.name, ("en",), self.tier)]

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        language: str,
        speed: float,
        reference: Reference | None = None,
        instructions: str | None = None,
    ) -> Iterator[FloatAudio]:
        self.instructions.append(instructions)
        t = np.arange(4000) / 16000
        yield (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def service(engine: StyledEngine) -> TTSService:
    config = ServiceConfig(fast_engine="styled", hq_engine="none", idle_unload_s=0)
    return TTSService(config, {"styled": engine, "espeak": EspeakEngine()})


async def speak(synth: SpeechSynthesizer, instructions: str | None) -> int:
    stream = await synth.synthesize(
        SynthesisRequest("Good news. Really.", mode=TTSMode.FAST, instructions=instructions)
    )
    try:
        return sum([len(chunk.pcm) async for chunk in stream.chunks()])
    finally:
        await stream.aclose()


async def test_the_instruction_reaches_the_engine_in_process() -> None:
    engine = StyledEngine()
    assert isinstance(engine, InstructableEngine)
    svc = service(engine)
    await svc.start()
    try:
        assert await speak(EmbeddedSynthesizer(svc, Tier.FAST), "Speak cheerfully.") > 0
        await speak(EmbeddedSynthesizer(svc, Tier.FAST), None)
    finally:
        await svc.aclose()
    assert engine.instructions == ["Speak cheerfully.", "Speak cheerfully.", None, None]  # one per clause


async def test_the_instruction_reaches_the_engine_through_the_tts_service() -> None:
    engine = StyledEngine()
    with serve_in_thread(create_app(service(engine))) as url:
        async with httpx.AsyncClient(timeout=60) as client:
            assert await speak(RemoteSynthesizer(url, Tier.FAST, client), "Whisper, please.") > 0
    assert engine.instructions == ["Whisper, please.", "Whisper, please."]
