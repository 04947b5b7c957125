"""The encoder window sized to the audio (docs/adr/0014-voice-latency.md): the same words as
Whisper's fixed 30 s window on real speech, with the encoder fed only the audio plus the padding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avatar_asr import engine as engine_module
from avatar_asr.engine import WhisperEngine, window_frames
from services.asr.tests.helpers import asr_config, wer
from tests.support.audio import SpeechClip


@pytest.mark.parametrize(
    ("duration_s", "pad_s", "expected"),
    [
        (7.2, 4.0, 1200),  # 11.2 s rounded up to whole seconds
        (1.6, 4.0, 1000),  # at least the minimum window
        (26.0, 4.0, 3000),  # exactly fills the fixed window
        (26.1, 4.0, None),  # does not fit one window: every 30 s window stays whole
        (5.0, 0.0, None),  # 0 turns the short window off
        (5.0, -1.0, None),
        (1.2, 4.0, None),  # ~1 s of speech keeps the fixed window (it would lose its first word)
    ],
)
def test_window_frames(duration_s: float, pad_s: float, expected: int | None) -> None:
    assert window_frames(duration_s, pad_s, 10.0, 1.5) == expected


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    engine = WhisperEngine(asr_config())
    engine.load()
    return engine


@pytest.mark.slow
def test_short_window_keeps_the_words_on_real_speech(
    whisper: WhisperEngine, librivox: list[SpeechClip]
) -> None:
    short_config = whisper.config
    full_config = dataclasses.replace(short_config, window_pad_s=0.0)
    assert short_config.window_pad_s > 0
    refs, short_hyps, full_hyps = [], [], []
    audios = [(np.frombuffer(c.pcm, "<i2") / 32768).astype(np.float32) for c in librivox]
    # single clips, and two clips joined (a longer utterance with a pause inside)
    items = [(a, c.transcript) for a, c in zip(audios, librivox, strict=True)]
    items += [
        (np.concatenate([audios[i], audios[i + 1]]), f"{librivox[i].transcript} {librivox[i + 1].transcript}")
        for i in range(2)
    ]
    for audio, reference in items:
        whisper.config = short_config
        short = whisper.recognize(audio, language="en")
        frames = engine_module._window.frames
        cfg = short_config
        assert frames == window_frames(
            len(audio) / 16000, cfg.window_pad_s, cfg.min_window_s, cfg.short_window_from_s
        )
        assert frames is not None and frames < 3000
        whisper.config = full_config
        full = whisper.recognize(audio, language="en")
        assert engine_module._window.frames is None
        refs.append(reference)
        short_hyps.append(short.text)
        full_hyps.append(full.text)
        # the word timings still fall inside the audio
        assert short.words and short.words[-1].end <= len(audio) / 16000 + 0.5
    whisper.config = short_config
    short_wer, full_wer = wer(refs, short_hyps), wer(refs, full_hyps)
    # within one word in a hundred of the fixed window (on these clips: identical, or one word)
    assert short_wer <= full_wer + 0.01, (short_hyps, full_hyps)
