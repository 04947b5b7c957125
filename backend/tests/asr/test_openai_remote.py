"""``/v1/audio/transcriptions`` and ``/translations`` on the orchestrator with the remote ASR
placement (the compose one): the real ASR service over HTTP behind the recognizer port, driven by
the official SDK; storage and the other engines are fakes (tests/fakes.py)."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import openai
import pytest

from avatar.infrastructure.asr import build_recognizer
from avatar.presentation.app import create_app
from avatar.settings import Placement
from avatar_common.audio import encode_wav
from backend.tests.asr.conftest import asr_settings
from tests.e2e.harness import running_server
from tests.fakes import fake_container
from tests.support.audio import SpeechClip
from tests.support.auth import make_user

pytestmark = pytest.mark.slow


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]+", " ", text.lower().replace("-", " ")).split())


async def test_transcription_through_the_remote_asr_service(
    asr_service_url: str, librivox: list[SpeechClip]
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        settings = asr_settings(placement=Placement.REMOTE, url=asr_service_url)
        recognizer = await build_recognizer(settings, stack)
        container = fake_container(settings, recognizer=recognizer)
        base = await stack.enter_async_context(running_server(create_app(settings, container)))
        _user, key = await make_user(container, "remote-asr")
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)
        stack.push_async_callback(client.close)
        clip = librivox[1]
        clip_wav = encode_wav(clip.samples, 16000)
        result = await client.audio.transcriptions.create(
            model="whisper-1", file=("clip.wav", clip_wav), language="en", temperature=0.2
        )
        assert words(result.text) == words(clip.transcript)
        # The service answers whole: the stream's deltas come at the end, the same text.
        stream = await client.audio.transcriptions.create(
            model="whisper-1", file=("clip.wav", clip_wav), language="en", stream=True
        )
        events = [event async for event in stream]
        done = events[-1]
        assert done.type == "transcript.text.done" and words(done.text) == words(clip.transcript)
        assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == done.text
        silent = await client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("silence.wav", encode_wav(np.zeros(32000, np.float32), 16000))
        )
        assert silent.status_code == 200 and silent.parse().text == ""
        assert silent.headers["x-avatar-notice"] == "NO_SPEECH"
        # The service's /v1/audio/translations: English speech translated into English is itself.
        with pytest.deprecated_call():  # this SDK marks translations deprecated; they still work
            translated = await client.audio.translations.create(
                model="whisper-1", file=("clip.wav", clip_wav), response_format="verbose_json"
            )
        assert translated.language == "english"
        assert len(set(words(translated.text).split()) & set(words(clip.transcript).split())) >= 3
