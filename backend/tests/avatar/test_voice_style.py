"""Emotion in the voice: the persona file's per-emotion speed and pitch, validated, and applied to the
synthesis requests of a real turn over the WebSocket (fake engines record the requests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar.application.ports.tts import SynthesisRequest
from avatar.application.voice_style import (
    StyledSynthesizer,
    VoiceStyle,
    load_voice_styles,
    parse_voice_styles,
)
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion, TTSMode
from avatar.presentation.app import create_app
from avatar.settings import REPO_ROOT, Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.fakes import FakeChatModel, FakeSynthesizer, fake_container


def test_the_shipped_persona_gives_each_emotion_a_voice() -> None:
    styles = load_voice_styles(REPO_ROOT / "config" / "persona.toml")
    assert styles[Emotion.EXCITED].pitch > 1.0 and styles[Emotion.EXCITED].speed > 1.0
    assert styles[Emotion.SAD].pitch < 1.0 and styles[Emotion.SAD].speed < 1.0
    assert Emotion.NEUTRAL not in styles
    assert styles[Emotion.EXCITED].instruction == "Speak with excitement."


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"voice": {"emotions": {"giddy": {"speed": 1.1}}}}, "unknown emotion"),
        ({"voice": {"emotions": {"happy": {"speed": 3.0}}}}, "speed = 3.0 must be a number within 0.5..2.0"),
        ({"voice": {"emotions": {"happy": {"pitch": 0.5}}}}, "pitch = 0.5 must be a number within 0.8..1.25"),
        ({"voice": {"emotions": {"happy": {"pitch": "high"}}}}, "pitch = 'high'"),
        ({"voice": {"emotions": {"happy": {"volume": 2}}}}, "only speed, pitch and instruction"),
        ({"voice": {"emotions": {"happy": {"instruction": 3}}}}, "instruction must be text"),
        ({"voice": {"emotions": {"happy": {"instruction": "x" * 201}}}}, "instruction must be text"),
        ({"voice": "loud"}, "[voice] must be a table"),
    ],
)
def test_voice_style_mistakes_are_named(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_voice_styles(raw, "persona.toml")
    assert needle in info.value.message


def test_an_unreadable_persona_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_voice_styles(tmp_path / "missing.toml")


async def test_requests_are_styled_by_their_emotion() -> None:
    inner = FakeSynthesizer()
    styled = StyledSynthesizer(inner, {Emotion.EXCITED: VoiceStyle(speed=1.2, pitch=1.1)})
    for emotion in (Emotion.EXCITED, Emotion.NEUTRAL, None):
        await styled.synthesize(SynthesisRequest(text="Hi.", speed=1.5, emotion=emotion))
    speeds = [(r.speed, r.pitch, r.emotion) for r in inner.requests]
    first = inner.requests[0]
    assert first.speed == pytest.approx(1.8) and first.pitch == pytest.approx(1.1)
    assert speeds[1:] == [(1.5, 1.0, Emotion.NEUTRAL), (1.5, 1.0, None)]


async def test_the_emotions_instruction_goes_with_the_request_unless_the_caller_gave_one() -> None:
    inner = FakeSynthesizer()
    styled = StyledSynthesizer(inner, {Emotion.SAD: VoiceStyle(0.9, 0.95, "Speak in a sad tone.")})
    await styled.synthesize(SynthesisRequest(text="Oh.", emotion=Emotion.SAD))
    await styled.synthesize(SynthesisRequest(text="Oh.", emotion=Emotion.SAD, instructions="Whisper."))
    await styled.synthesize(SynthesisRequest(text="Oh."))
    assert [r.instructions for r in inner.requests] == ["Speak in a sad tone.", "Whisper.", None]


async def test_a_turn_is_spoken_in_its_emotions_voice() -> None:
    settings = Settings(environment="test")
    tts, hq = FakeSynthesizer(), FakeSynthesizer(TTSMode.HQ)
    container = fake_container(
        settings,
        chat_model=FakeChatModel(("[excited] Wow, you did it! That is amazing.",)),
        fast_tts=tts,
        hq_tts=hq,
    )
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as base:
            created = await create_session(base)
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await client.send({"type": "set_tts_mode", "mode": "hq"})
                await client.send({"type": "text_input", "text": "I passed!"})
                await client.until_type("turn_completed")
                await client.until_type("hq_ready")
    finally:
        await container.queue.stop()
    expected = load_voice_styles(settings.llm.persona_file)[Emotion.EXCITED]
    assert tts.requests and all(r.emotion is Emotion.EXCITED for r in tts.requests)
    assert all(r.pitch == expected.pitch and r.speed == expected.speed for r in tts.requests)
    # The HQ pass of the same turn is spoken in the same style.
    (hq_request,) = hq.requests
    assert hq_request.emotion is Emotion.EXCITED and hq_request.pitch == expected.pitch
