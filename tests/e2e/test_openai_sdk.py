"""The official ``openai`` SDK against the orchestrator's one URL on the embedded stack with real
models (Whisper base, Piper, SmolLM2 on llama.cpp, PostgreSQL + pgvector), as a developer would
point it there: transcription of real speech (streamed too), silence, corrupt audio, no key,
``alloy`` in every format, speech as server-sent events, chat whole and streamed, the model list;
and no accuracy lost to the plumbing: on a long LibriVox recording the endpoint's word error rate is
within 1 point of faster-whisper decoding the same file directly (docs/openai.md).

Heavy calls are few: two short and two long decodes, six short Piper utterances, two short chats.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import AsyncIterator

import numpy as np
import openai
import pytest
import pytest_asyncio

from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from avatar_common.audio import decode_audio, encode_wav
from services.asr.tests.helpers import asr_config, wer
from services.asr.tests.test_long_recordings import Recording, recordings
from tests.e2e.harness import running_server
from tests.e2e.test_conversation import e2e_settings
from tests.support.audio import SpeechClip
from tests.support.auth import make_user

pytestmark = pytest.mark.slow

RATE = 16000
#: Generous: real models on two shared cores (the tests never assert on time).
TIMEOUT_S = 600.0


class Stack:
    def __init__(self, base: str, container: Container, key: str) -> None:
        self.base, self.container, self.key = base, container, key
        self.client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=TIMEOUT_S)


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[Stack]:
    settings = e2e_settings(tmp_path_factory.mktemp("openai"), module_database_url, llama_server)
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            _user, key = await make_user(container, f"sdk-{uuid.uuid4().hex[:8]}")
            stack = Stack(base, container, key)
            try:
                yield stack
            finally:
                await stack.client.close()
    finally:
        await container.aclose()


def wav(samples: np.ndarray) -> bytes:
    return encode_wav(samples.astype(np.float32), RATE)


def words(text: str) -> set[str]:
    return set(text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split())


async def test_transcription_of_real_speech_with_word_timings(
    stack: Stack, librivox: list[SpeechClip]
) -> None:
    clip = librivox[0]
    result = await stack.client.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", wav(clip.samples), "audio/wav"),
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    expected = words(clip.transcript)
    assert len(expected & words(result.text)) >= len(expected) * 2 // 3, (result.text, clip.transcript)
    assert result.duration == pytest.approx(clip.duration_s, abs=0.05) and result.language == "english"
    assert result.words and result.segments
    assert all(0.0 <= w.start <= w.end <= result.duration + 0.05 for w in result.words)


async def test_streamed_long_recording_matches_a_direct_decode(
    stack: Stack, librivox: list[SpeechClip]
) -> None:
    """The ``long-pauses`` recording of services/asr/tests/test_long_recordings.py (~30 s: the five
    LibriVox utterances with pauses of 0.6-2.5 s), streamed from the orchestrator: deltas arrive
    segment by segment, and the word error rate of the whole is within 1 point of faster-whisper
    decoding the same file directly."""
    recording: Recording = recordings(librivox)[1]
    assert recording.name == "long-pauses"
    stream = await stack.client.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", recording.wav, "audio/wav"), language="en", stream=True
    )
    events = [event async for event in stream]
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    last = events[-1]
    assert last.type == "transcript.text.done"
    assert len(deltas) >= 2 and "".join(deltas) == last.text
    from faster_whisper import WhisperModel

    cfg = asr_config()
    model = WhisperModel(cfg.model, device=cfg.device, compute_type=cfg.compute_type, cpu_threads=2)
    segments, _info = model.transcribe(io.BytesIO(recording.wav), language="en", beam_size=cfg.beam_size)
    direct = " ".join(s.text.strip() for s in segments)
    del model
    ours_wer, direct_wer = wer([recording.transcript], [last.text]), wer([recording.transcript], [direct])
    print(f"\n/v1/audio/transcriptions WER {ours_wer:.4f}, direct faster-whisper {direct_wer:.4f}")
    assert ours_wer <= direct_wer + 0.01, (last.text, direct)


async def test_silence_corrupt_audio_and_no_key(stack: Stack) -> None:
    silent = await stack.client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("silence.wav", wav(np.zeros(2 * RATE)), "audio/wav")
    )
    assert silent.status_code == 200 and silent.parse().text == ""
    assert silent.headers["x-avatar-notice"] == "NO_SPEECH"
    with pytest.raises(openai.BadRequestError) as corrupt:
        await stack.client.audio.transcriptions.create(
            model="whisper-1", file=("broken.mp3", b"ID3\x03\x00" + bytes(range(256)) * 40, "audio/mpeg")
        )
    assert corrupt.value.code == "invalid_audio"
    async with openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key="sk-wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(
                model="avatar", messages=[{"role": "user", "content": "Hi"}]
            )


async def test_alloy_speaks_decodable_audio_in_every_format(stack: Stack) -> None:
    text = "Hello there, how are you today?"
    lengths: dict[str, float] = {}
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        async with stack.client.audio.speech.with_streaming_response.create(
            model="tts-1",
            voice="alloy",
            input=text,
            response_format=fmt,
        ) as response:
            audio = await response.read()
            assert response.headers["x-avatar-voice"] == "piper:en_US-joe-medium", fmt
            rate = int(response.headers["x-sample-rate"])
        if fmt == "pcm":
            samples = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0
            lengths[fmt] = len(samples) / rate
        else:
            decoded = decode_audio(audio)
            samples, lengths[fmt] = decoded.samples, decoded.duration_s
        assert float(np.sqrt(np.mean(samples**2))) > 0.01, fmt  # speech, not silence
    assert all(1.0 < seconds < 6.0 for seconds in lengths.values()), lengths
    # What alloy said is heard back by the recognizer.
    async with stack.client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    ) as response:
        spoken = await response.read()
    heard = await stack.client.audio.transcriptions.create(
        model="whisper-1", file=("alloy.wav", spoken), language="en"
    )
    assert len(words(text) & words(heard.text)) >= 4, heard.text


async def test_speech_as_server_sent_events(stack: Stack) -> None:
    async with stack.client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input="One clause. And another one.",
        response_format="pcm",
        stream_format="sse",
        instructions="Speak cheerfully.",
    ) as response:
        events = [
            json.loads(line[len("data: ") :])
            async for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    assert len(kinds) >= 3  # one delta per clause at least
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) > 22050 * 2 * 0.8  # at least ~0.8 s of 22.05 kHz PCM16


async def test_chat_whole_and_streamed_and_the_model_list(stack: Stack) -> None:
    ids = [model.id async for model in stack.client.models.list()]
    assert ids[0] == "avatar" and stack.container.settings.llm.model in ids
    reply = await stack.client.chat.completions.create(
        model="avatar", messages=[{"role": "user", "content": "Hello! Who are you?"}], max_tokens=30
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.content.startswith("[")
    assert reply.usage is not None and reply.usage.prompt_tokens > 50  # the persona is in the prompt
    plain = await stack.client.chat.completions.create(
        model=stack.container.settings.llm.model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in plain]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.prompt_tokens < 50  # no persona: only the message
    with pytest.raises(openai.NotFoundError):
        await stack.client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "Hi"}]
        )
