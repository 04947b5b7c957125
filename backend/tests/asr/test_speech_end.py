"""A final carries where the speech itself ended (the last loud sample), for timing the endpoint
from what the person did (docs/adr/0014-voice-latency.md)."""

from __future__ import annotations

import numpy as np

from avatar.domain.models import Transcription
from avatar.infrastructure.asr import with_speech_end


def _pcm(*parts: tuple[float, float]) -> bytes:
    """Concatenated (seconds, amplitude) pieces of a 220 Hz tone at 16 kHz (amplitude 0: silence)."""
    out = []
    for seconds, amplitude in parts:
        t = np.arange(int(seconds * 16000)) / 16000
        out.append((amplitude * np.sin(2 * np.pi * 220 * t)).astype("<i2"))
    return np.concatenate(out).tobytes()


def _final(**kw: float | bool) -> Transcription:
    values: dict[str, float | bool] = {"audio_start_ms": 2000.0, "audio_end_ms": 3800.0, "is_final": True}
    values.update(kw)
    return Transcription(text="hi", confidence=0.9, **values)  # type: ignore[arg-type]


def test_a_final_gets_the_stream_time_of_its_last_loud_sample() -> None:
    pcm = _pcm((0.3, 0), (1.0, 8000), (0.5, 0))  # pre-roll, speech, the recognizer's tail
    assert with_speech_end(_final(), pcm).speech_end_ms == 2000.0 + 1300.0


def test_quiet_audio_partials_and_missing_audio_leave_it_unknown() -> None:
    assert with_speech_end(_final(), _pcm((1.0, 0))).speech_end_ms == 0.0
    assert with_speech_end(_final(), b"").speech_end_ms == 0.0
    assert with_speech_end(_final(is_final=False), _pcm((1.0, 8000))).speech_end_ms == 0.0


def test_it_never_falls_after_the_utterance_end() -> None:
    pcm = _pcm((3.0, 8000))  # more audio than the stream times say
    assert with_speech_end(_final(), pcm).speech_end_ms == 3800.0
