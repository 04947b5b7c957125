"""The backend's speech synthesizers: embedded (in-process engines) and remote (the TTS service)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest, VoiceReference
from avatar.domain.errors import DependencyError, InvalidInputError, NotFoundError
from avatar.domain.models import AudioChunk, TTSMode
from avatar.infrastructure.tts import build_synthesizers, create_service_app
from avatar.settings import Placement, Settings
from tests.support.net import free_port, serve_in_thread

Pair = tuple[SpeechSynthesizer, SpeechSynthesizer]


def _settings(tmp: Path, **tts: object) -> Settings:
    # The remote service runs keyed, as in compose (docs/security.md, "Service keys").
    settings = Settings(_env_file=None, data_dir=tmp, security={"service_key": "tts-service-key-for-tests"})
    settings.tts.idle_unload_s = 0
    for key, value in tts.items():
        setattr(settings.tts, key, value)
    return settings


@pytest_asyncio.fixture(scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    async with contextlib.AsyncExitStack() as stack:
        fast, hq = await build_synthesizers(_settings(tmp_path_factory.mktemp("tts")), stack)
        yield fast, hq


async def _collect(
    synth: SpeechSynthesizer, request: SynthesisRequest
) -> tuple[list[AudioChunk], str | None, str]:
    stream = await synth.synthesize(request)
    chunks = [c async for c in stream.chunks()]
    await stream.aclose()
    return chunks, stream.notice, stream.engine


async def test_embedded_fast_tier_streams_pcm16_chunks(embedded: Pair) -> None:
    fast, _ = embedded
    chunks, notice, engine = await _collect(fast, SynthesisRequest("Hello there, my friend. See you soon."))
    assert engine == "piper" and notice is None
    assert [c.sequence for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert all(c.sample_rate == 22050 for c in chunks)
    assert chunks[1].timestamp_ms == round(chunks[0].duration_ms)
    assert sum(c.duration_ms for c in chunks) > 1500


async def test_embedded_hq_tier_and_its_fallback_notice(embedded: Pair) -> None:
    _, hq = embedded
    chunks, notice, engine = await _collect(hq, SynthesisRequest("안녕하세요.", mode=TTSMode.HQ))
    assert engine == "espeak" and notice is not None and "served by the fast tier" in notice
    assert chunks


async def test_embedded_profile_on_a_non_cloning_engine_says_so(embedded: Pair) -> None:
    fast, _ = embedded
    ref = VoiceReference(
        pcm=b"\x00\x01" * 16000, sample_rate=16000, transcript="hello", embedding=(0.1,) * 256
    )
    stream = await fast.synthesize(SynthesisRequest("Hello.", reference=ref))
    assert stream.notice is not None and "piper cannot clone voices" in stream.notice
    await stream.aclose()


async def test_embedded_errors_are_domain_errors(embedded: Pair) -> None:
    fast, _ = embedded
    with pytest.raises(InvalidInputError) as info:
        await fast.synthesize(SynthesisRequest("   "))
    assert info.value.code == "EMPTY_TEXT"
    with pytest.raises(NotFoundError):
        await fast.synthesize(SynthesisRequest("Hi.", voice="nobody"))
    with pytest.raises(InvalidInputError) as info:
        await fast.synthesize(SynthesisRequest("<speak>Hi</speak>"))
    assert info.value.code == "MARKUP_NOT_SUPPORTED"


async def test_embedded_voices_and_health(embedded: Pair) -> None:
    fast, hq = embedded
    fast_voices = await fast.voices()
    assert {v.mode for v in fast_voices} == {TTSMode.FAST}
    assert any(v.voice_id == "piper:en_US-joe-medium" and v.languages == ("en",) for v in fast_voices)
    assert {v.engine for v in await hq.voices()} == {"kokoro"}
    health = await fast.health()
    assert health.ok and health.name == "tts_fast"


@pytest.fixture(scope="module")
def remote_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_service_app(_settings(tmp_path_factory.mktemp("tts-remote")), "fast")
    with serve_in_thread(app) as url:
        yield url


async def test_remote_synthesizer_against_the_real_service(remote_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, placement=Placement.REMOTE, fast_url=remote_url, hq_url=remote_url)
    async with contextlib.AsyncExitStack() as stack:
        fast, _hq = await build_synthesizers(settings, stack)
        chunks, notice, engine = await _collect(fast, SynthesisRequest("Hello from the service. Bye."))
        assert engine == "piper" and notice is None
        assert sum(c.duration_ms for c in chunks) > 1000
        assert all(len(c.pcm) % 2 == 0 and c.sample_rate == 22050 for c in chunks)
        with pytest.raises(NotFoundError):
            await fast.synthesize(SynthesisRequest("Hi.", voice="nobody"))
        with pytest.raises(InvalidInputError) as info:
            await fast.synthesize(SynthesisRequest("bad \x00 text"))
        assert info.value.code == "CONTROL_CHARACTERS"
        assert all(v.mode is TTSMode.FAST for v in await fast.voices())
        assert (await fast.health()).ok
    async with httpx.AsyncClient(base_url=remote_url) as http:  # without the service key
        refused = await http.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "x"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHENTICATED"
        assert (await http.get("/health")).status_code == 200


async def test_remote_synthesizer_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = _settings(tmp_path, placement=Placement.REMOTE, fast_url=url)
    async with contextlib.AsyncExitStack() as stack:
        fast, _ = await build_synthesizers(settings, stack)
        with pytest.raises(DependencyError):
            await fast.synthesize(SynthesisRequest("Hi."))
        assert not (await fast.health()).ok
