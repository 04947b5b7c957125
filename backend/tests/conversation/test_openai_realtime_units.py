"""The pure parts of the Realtime adapter (docs/realtime.md): the voice table, the session settings
in GA and beta shape, the streaming resampler."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from avatar.application.openai_compat.speech import OPENAI_VOICES
from avatar.application.ports.tts import VoiceInfo
from avatar.application.realtime.config import ConfigError, RealtimeConfig
from avatar.application.realtime.events import SessionConfigIn
from avatar.application.realtime.voices import UnknownVoiceError, choose_voice
from avatar.domain.models import TTSMode
from avatar.infrastructure.resampling import SoxrStreamResampler

PIPER = VoiceInfo("piper:en_US-joe-medium", "en_US-joe-medium", ("en",), TTSMode.FAST, "piper")
KOKORO = VoiceInfo("kokoro:jf_alpha", "jf_alpha", ("en", "ja"), TTSMode.FAST, "kokoro")


def test_openai_voices_map_to_the_best_stock_voice_offered() -> None:
    assert choose_voice("nova", [PIPER, KOKORO]).voice == "kokoro:jf_alpha"  # the REST table's voice
    assert choose_voice("Echo", [PIPER, KOKORO]).voice == "piper:en_US-joe-medium"
    assert choose_voice("nova", []).voice is None  # the engine's default voice
    assert choose_voice("piper:en_US-joe-medium", [PIPER]).voice == "piper:en_US-joe-medium"
    profile = uuid.uuid4()
    assert choose_voice(str(profile), [PIPER]).voice_profile_id == profile
    with pytest.raises(UnknownVoiceError):
        choose_voice("nobody", [PIPER])
    openai_voices = "alloy ash ballad coral echo fable nova onyx sage shimmer verse marin cedar"
    assert set(openai_voices.split()) <= set(OPENAI_VOICES)


def test_session_settings_in_ga_and_beta_shape() -> None:
    fresh = RealtimeConfig(server_silence_ms=500)
    assert fresh.auto_reply and fresh.audio_out and fresh.transcription is None  # OpenAI's defaults
    assert fresh.silence_duration_ms == 500 and fresh.reply_delay_ms == 0
    longer = SessionConfigIn.model_validate(
        {"turn_detection": {"type": "server_vad", "silence_duration_ms": 1200}}
    )
    fresh.apply(longer)
    assert (fresh.reply_delay_ms, fresh.auto_reply, fresh.delayed_reply) == (700, False, True)
    shorter = SessionConfigIn.model_validate(
        {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}
    )
    fresh.apply(shorter)  # the recognizer cannot end utterances sooner than its own endpoint
    assert (fresh.silence_duration_ms, fresh.auto_reply) == (500, True)
    config = RealtimeConfig(server_silence_ms=500)
    ga = SessionConfigIn.model_validate(
        {"audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}}}
    )
    config.apply(ga)
    assert (config.vad, config.auto_reply, config.transcription is not None) == (False, False, True)
    described = config.describe("sid", "avatar", beta=False)
    assert described["audio"]["input"]["turn_detection"] is None
    beta = SessionConfigIn.model_validate(
        {
            "modalities": ["text", "audio"],
            "voice": "verse",
            "turn_detection": {"type": "server_vad", "create_response": False},
            "input_audio_format": "pcm16",
        }
    )
    assert config.apply(beta) == "verse"
    assert (config.vad, config.auto_reply, config.output_modalities) == (True, False, ["audio"])
    assert config.describe("sid", "avatar", beta=True)["turn_detection"]["create_response"] is False
    config.apply(SessionConfigIn.model_validate({"output_modalities": ["text"]}))
    assert not config.audio_out
    with pytest.raises(ConfigError) as refused:
        config.apply(SessionConfigIn.model_validate({"output_audio_format": "g711_ulaw"}))
    assert refused.value.param == "session.output_audio_format"
    with pytest.raises(ConfigError):
        config.apply(SessionConfigIn.model_validate({"audio": {"input": {"format": {"rate": 16000}}}}))


def test_the_stream_resampler_keeps_length_and_tone_across_chunks() -> None:
    sr = 22050
    tone = np.array([int(8000 * math.sin(2 * math.pi * 440 * i / sr)) for i in range(sr)], dtype="<i2")
    resampler = SoxrStreamResampler(sr, 24000)
    pieces = [resampler.push(tone[i : i + 1000].tobytes()) for i in range(0, sr, 1000)]
    out = np.frombuffer(b"".join(pieces) + resampler.flush(), dtype="<i2").astype(np.float64)
    assert abs(len(out) - 24000) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) * 24000 / len(out) - 440) < 2  # still a 440 Hz tone
    same = SoxrStreamResampler(24000, 24000)
    assert same.push(b"\x01\x00") == b"\x01\x00" and same.flush() == b""
