"""Round trip: Piper speaks English sentences, Whisper base transcribes them; WER <= 5 %."""

from __future__ import annotations

import asyncio
import re

import jiwer
import numpy as np

from avatar_common.audio import resample
from avatar_tts.service import TTSService

from .conftest import manifest

SENTENCES = [
    "The weather is lovely today, so we should take a walk in the park.",
    "Please remember to buy some bread and milk on your way home.",
    "My sister is learning to play the piano after school.",
    "We watched a wonderful movie about a small town by the sea.",
    "Could you tell me where the nearest train station is?",
]


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


async def test_piper_speech_is_transcribed_back_with_low_word_error_rate(tts_service: TTSService) -> None:
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(manifest().artifact_dir("whisper-base")), device="cpu", compute_type="int8", cpu_threads=2
    )

    def transcribe(samples: np.ndarray) -> str:
        segments, _ = model.transcribe(samples, language="en", beam_size=1, vad_filter=False)
        return " ".join(s.text for s in segments)

    hypotheses = []
    pad = np.zeros(8000, np.float32)
    for sentence in SENTENCES:
        utt = await tts_service.synthesize(sentence)
        assert utt.engine == "piper"
        audio = resample(await utt.read_all(), utt.sample_rate, 16000)
        text = await asyncio.to_thread(transcribe, np.concatenate([pad, audio, pad]))
        hypotheses.append(normalize(text))
    references = [normalize(s) for s in SENTENCES]
    wer = jiwer.wer(references, hypotheses)
    assert wer <= 0.05, list(zip(references, hypotheses, strict=True))
