"""The TTS service with real packaged voices: tiers, languages, bad input, HQ fallback, barge-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from avatar_tts.engine import FloatAudio, Reference, Tier, Voice
from avatar_tts.engines.espeak import EspeakEngine
from avatar_tts.errors import (
    InvalidTextError,
    TTSError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from avatar_tts.service import ServiceConfig, TTSService

from .conftest import packaged_config

SENTENCES = "The sun was warm. We walked to the river. The water was cold. Birds sang in the trees. " * 3


async def test_fast_tier_streams_english_with_piper(tts_service: TTSService) -> None:
    utt = await tts_service.synthesize("Hello there, my good friend. How are you today?")
    assert (utt.engine, utt.voice, utt.sample_rate, utt.mode, utt.notice) == (
        "piper",
        "piper:en_US-joe-medium",
        22050,
        Tier.FAST,
        None,
    )
    parts = [a async for a in utt.chunks()]
    assert len(parts) >= 2  # one per clause, streamed as each is ready
    audio = np.concatenate(parts)
    assert 1.5 < audio.size / 22050 < 8
    assert float(np.abs(audio).max()) > 0.1


@pytest.mark.parametrize(
    ("text", "voice"),
    [
        ("안녕하세요, 오늘 날씨가 정말 좋네요.", "espeak:ko"),
        ("今天天气很好，我们一起去公园散步吧。", "espeak:cmn"),  # noqa: RUF001
    ],
)
async def test_korean_and_chinese_fall_back_to_espeak(tts_service: TTSService, text: str, voice: str) -> None:
    utt = await tts_service.synthesize(text)
    assert (utt.engine, utt.voice) == ("espeak", voice)
    audio = await utt.read_all()
    assert audio.size / utt.sample_rate > 0.8


async def test_hq_tier_uses_kokoro_and_records_metrics(tts_service: TTSService) -> None:
    utt = await tts_service.synthesize("This is the high quality voice.", tier=Tier.HQ)
    assert (utt.engine, utt.mode, utt.sample_rate, utt.notice) == ("kokoro", Tier.HQ, 24000, None)
    audio = await utt.read_all()
    assert audio.size / 24000 > 1.0
    assert tts_service.manager.is_loaded("kokoro")
    text = tts_service.metrics.render().decode()
    assert 'tts_model_load_seconds_count{mode="hq"} 1.0' in text
    assert 'tts_synthesis_latency_seconds_count{mode="hq"}' in text
    assert 'tts_rtf_count{mode="hq"}' in text
    # the model manager's memory accounting, read at scrape time
    registry = tts_service.metrics.registry
    size_mb = tts_service.manager.status()["kokoro"]["size_mb"]
    assert isinstance(size_mb, float) and size_mb > 0
    memory = registry.get_sample_value("tts_model_memory_bytes", {"model": "kokoro", "mode": "hq"})
    assert memory == pytest.approx(size_mb * 1e6, rel=0.01)
    assert registry.get_sample_value("tts_model_loaded", {"model": "kokoro", "mode": "hq"}) == 1.0
    assert registry.get_sample_value("tts_memory_budget_bytes") == 4096 * 1e6


async def test_hq_request_in_a_language_the_hq_voice_lacks_is_served_fast_with_a_notice(
    tts_service: TTSService,
) -> None:
    utt = await tts_service.synthesize("안녕하세요.", tier=Tier.HQ)
    assert utt.engine == "espeak" and utt.mode is Tier.FAST
    assert utt.notice is not None and "does not speak 'ko'" in utt.notice
    await utt.aclose()


async def test_explicit_voice_and_language(tts_service: TTSService) -> None:
    utt = await tts_service.synthesize("Hello.", voice="kokoro:jm_kumo", language="en-US")
    assert (utt.engine, utt.voice) == ("kokoro", "kokoro:jm_kumo")
    await utt.aclose()
    with pytest.raises(UnsupportedLanguageError, match="speaks en"):
        await tts_service.synthesize("Hello.", voice="piper:en_US-joe-medium", language="ko")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "EMPTY_TEXT"),
        ("   \n\t ", "EMPTY_TEXT"),
        ("x" * 4001, "TEXT_TOO_LONG"),
        ("Hello\x00 world", "CONTROL_CHARACTERS"),
        ("Ring \x07 the bell", "CONTROL_CHARACTERS"),
        ("<speak>Hello <break time='1s'/> world</speak>", "MARKUP_NOT_SUPPORTED"),
        ("Hello <prosody rate='slow'>world</prosody>", "MARKUP_NOT_SUPPORTED"),
        ("Tom &amp; Jerry", "MARKUP_NOT_SUPPORTED"),
        ("😀 👋 !!!", "NOTHING_TO_SPEAK"),
    ],
)
async def test_bad_text_is_refused_with_a_clear_code(tts_service: TTSService, text: str, code: str) -> None:
    with pytest.raises(InvalidTextError) as info:
        await tts_service.synthesize(text)
    assert info.value.code == code
    assert info.value.message


async def test_plain_text_with_angle_brackets_and_newlines_is_accepted(tts_service: TTSService) -> None:
    utt = await tts_service.synthesize("Is 3 < 5?\nYes, and 7 > 2.")
    assert (await utt.read_all()).size > 0


async def test_unknown_voice_language_and_bad_speed(tts_service: TTSService) -> None:
    with pytest.raises(UnknownVoiceError, match="unknown voice 'alloy'"):
        await tts_service.synthesize("Hello.", voice="alloy")
    with pytest.raises(UnsupportedLanguageError, match="no voice speaks language 'xx'"):
        await tts_service.synthesize("Hello.", language="xx")
    with pytest.raises(InvalidTextError, match="speed"):
        await tts_service.synthesize("Hello.", speed=9.0)


async def test_text_arriving_token_by_token_is_spoken_before_the_rest_arrives(
    tts_service: TTSService,
) -> None:
    first_audio = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        for token in ["Sure", ",", " I", " can", " help", " with", " that", ".", " "]:
            yield token
        await first_audio.wait()  # the rest of the reply comes only after the first audio
        for token in ["It", " is", " easy", "."]:
            yield token

    utt = await asyncio.wait_for(tts_service.synthesize(pieces=llm()), 60)
    parts = []
    async for audio in utt.chunks():
        parts.append(audio)
        first_audio.set()
    assert len(parts) == 2


async def test_bad_markup_arriving_in_pieces_stops_the_stream_with_an_error(tts_service: TTSService) -> None:
    async def pieces() -> AsyncIterator[str]:
        for p in ["Hello there my friend. ", "Now <spe", "ak>bad</speak>. "]:
            yield p

    utt = await tts_service.synthesize(pieces=pieces())
    with pytest.raises(InvalidTextError, match="markup"):
        async for _ in utt.chunks():
            pass


@dataclass
class Counting:
    """An engine wrapper that counts the clauses it was asked to speak."""

    inner: EspeakEngine
    calls: int = 0

    name = "espeak"
    tier = Tier.FAST
    can_clone = False
    estimate_mb = 0.0
    sample_rate = 22050

    def voices(self) -> list[Voice]:
        return self.inner.voices()

    def voice_for(self, language: str) -> Voice | None:
        return self.inner.voice_for(language)

    def load(self) -> None:
        self.inner.load()

    def unload(self) -> None:
        self.inner.unload()

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio]:
        self.calls += 1
        yield from self.inner.synthesize(text, voice, language=language, speed=speed)


async def test_aclose_stops_synthesis_mid_utterance() -> None:
    counting = Counting(EspeakEngine())
    service = TTSService(ServiceConfig(fast_engine="espeak", idle_unload_s=0), {"espeak": counting})
    await service.start()
    utt = await service.synthesize(SENTENCES)
    stream = utt.chunks()
    first = await anext(stream)
    assert first.size > 0
    await utt.aclose()
    assert [a async for a in stream] == []
    calls = counting.calls
    await asyncio.sleep(0.2)
    assert counting.calls == calls < 12  # bounded read-ahead, nothing after the close
    assert service.manager.status()["espeak"]["in_use"] == 0  # the lease was released
    await service.aclose()


class Broken:
    """An HQ engine whose model loads but whose synthesis fails (a real failure mode of GPU engines)."""

    name = "broken"
    tier = Tier.HQ
    can_clone = False
    estimate_mb = 10.0
    sample_rate = 24000

    def __init__(self, *, fail_load: bool = False) -> None:
        self.attempts = 0
        self.fail_load = fail_load

    def voices(self) -> list[Voice]:
        return [Voice("broken:a", "a", self.name, ("en",), self.tier)]

    def load(self) -> None:
        if self.fail_load:
            self.attempts += 1
            raise OSError("CUDA error: out of memory")

    def unload(self) -> None:
        return None

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio]:
        self.attempts += 1
        raise RuntimeError("decoder produced NaN")


def _service(hq: Broken, **config: object) -> TTSService:
    base = ServiceConfig(fast_engine="espeak", hq_engine="broken", idle_unload_s=0, breaker_recovery_s=0.3)
    for key, value in config.items():
        setattr(base, key, value)
    return TTSService(base, {"espeak": EspeakEngine(), "broken": hq})


async def test_hq_failure_degrades_to_fast_and_the_breaker_opens_after_five() -> None:
    hq = Broken()
    service = _service(hq)
    await service.start()
    for i in range(5):
        utt = await service.synthesize("Hello there.", tier=Tier.HQ)
        assert (utt.engine, utt.mode) == ("espeak", Tier.FAST), i
        assert utt.notice is not None and "HQ model unavailable for now" in utt.notice
        assert "decoder produced NaN" in utt.notice
        assert (await utt.read_all()).size > 0  # the whole text, spoken by the fast tier
    assert hq.attempts == 5 and service.breaker.state == "open"
    utt = await service.synthesize("Hello again.", tier=Tier.HQ)
    assert hq.attempts == 5  # open: HQ not even tried
    assert utt.notice is not None and "failed 5 times in a row" in utt.notice
    await utt.aclose()
    await asyncio.sleep(0.35)  # past the recovery timeout: half-open, one trial
    assert service.breaker.state == "half_open"
    utt = await service.synthesize("Once more.", tier=Tier.HQ)
    await utt.aclose()
    assert hq.attempts == 6
    await service.aclose()


async def test_hq_load_failure_degrades_with_a_notice() -> None:
    hq = Broken(fail_load=True)
    service = _service(hq)
    await service.start()
    utt = await service.synthesize("Hello there.", tier=Tier.HQ)
    assert utt.engine == "espeak"
    assert utt.notice is not None and "CUDA error: out of memory" in utt.notice
    assert (await utt.read_all()).size > 0
    await service.aclose()


async def test_hq_short_of_memory_degrades_to_fast_mode_without_counting_as_a_failure() -> None:
    hq = Broken()
    service = _service(hq, memory_budget_mb=5.0)  # the HQ model needs 10 MB
    await service.start()
    utt = await service.synthesize("Hello there.", tier=Tier.HQ)
    assert utt.engine == "espeak" and utt.mode is Tier.FAST
    assert utt.notice is not None and utt.notice.startswith("busy, switched to fast mode")
    await utt.aclose()
    assert hq.attempts == 0 and service.breaker.failure_count == 0
    await service.aclose()


async def test_hq_disabled_is_served_fast_with_a_notice() -> None:
    service = TTSService(packaged_config(hq_enabled=False, fast_engine="espeak"), {"espeak": EspeakEngine()})
    await service.start()
    utt = await service.synthesize("Hello.", tier=Tier.HQ)
    assert utt.notice == "the HQ tier is disabled; served by the fast tier"
    await utt.aclose()
    await service.aclose()


async def test_a_profile_on_an_engine_that_cannot_clone_gets_the_closest_stock_voice() -> None:
    from avatar_tts.engines.kokoro import KokoroEngine
    from avatar_tts.voices import ResemblyzerEmbedder

    config = packaged_config(fast_engine="espeak")
    assert config.kokoro_model is not None and config.kokoro_voices is not None
    # Two contrasting stock voices keep the test short (each is synthesized once to embed it).
    kokoro = KokoroEngine(
        config.kokoro_model, config.kokoro_voices, config.kokoro_vocab, voice_names=("jf_alpha", "jm_kumo")
    )
    service = TTSService(config, {"espeak": EspeakEngine(), "kokoro": kokoro})
    await service.start()
    male = next(v for v in kokoro.voices() if v.name == "jm_kumo")
    async with service.manager.lease("kokoro"):
        clip = np.concatenate(
            list(kokoro.synthesize("I would like a table for two tonight.", male, language="en", speed=1.0))
        )
    embedding = await asyncio.to_thread(ResemblyzerEmbedder(), clip, kokoro.sample_rate)
    profile = Reference(clip, kokoro.sample_rate, "", tuple(float(x) for x in embedding))
    utt = await service.synthesize("Nice to meet you.", tier=Tier.HQ, reference=profile)
    assert utt.voice == "kokoro:jm_kumo"
    assert utt.notice is not None
    assert "kokoro cannot clone voices" in utt.notice and "closest to the profile" in utt.notice
    assert (await utt.read_all()).size > 0
    await service.aclose()


async def test_voices_are_listed_with_language_and_tier(tts_service: TTSService) -> None:
    voices = {v.voice_id: v for v in tts_service.voices()}
    assert voices["piper:en_US-joe-medium"].languages == ("en",)
    assert voices["piper:en_US-joe-medium"].tier is Tier.FAST
    assert voices["kokoro:jf_alpha"].tier is Tier.HQ
    assert "ko" in voices["espeak:ko"].languages and "zh" in voices["espeak:cmn"].languages
    assert not any(v.can_clone for v in voices.values())


def test_errors_carry_http_statuses() -> None:
    assert InvalidTextError("x").status == 422
    assert UnknownVoiceError("x").status == 404
    assert issubclass(UnsupportedLanguageError, TTSError)
