"""The OpenAI-compatible ``/v1`` endpoints over a real uvicorn server with the fake engines
(tests/fakes.py), driven by the official ``openai`` SDK: auth, error shapes and statuses, voice
resolution and ownership, every speech format, transcription formats and limits, the avatar
model's persona and memory against the plain model, streaming shapes and CORS. The real models
are exercised in tests/e2e/test_openai_sdk.py."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio

from avatar.application.ports.asr import TranscriptionTask
from avatar.application.ports.audio import SpeechFormat
from avatar.application.ports.llm import ChatErrorKind, ChatModelError
from avatar.application.ports.tts import VoiceInfo
from avatar.application.voice_profiles import original_key
from avatar.bootstrap import Container
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.domain.models import SegmentTiming, Session, Transcription, TTSMode, VoiceProfile, WordTiming
from avatar.domain.wav import pcm16_wav
from avatar.presentation.app import create_app
from avatar.settings import Settings
from avatar_common.audio import decode_audio, encode_wav
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, FakeSynthesizer, fake_container
from tests.support.auth import bearer, make_user

PERSONA_REPLY = "[happy] Hello! Nice to meet you."


class ScriptedRecognizer(FakeRecognizer):
    """Answers with a transcript that has segments and word timings; ``silent`` raises NO_SPEECH
    as both recognizer placements do for silence; records the options it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.silent = False
        self.break_after_first_segment = False
        self.options: list[tuple[str | None, str | None, float, TranscriptionTask]] = []

    async def transcribe(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: TranscriptionTask = "transcribe",
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> Transcription:
        self.transcribed.append((len(pcm), sample_rate))
        self.options.append((language, prompt, temperature, task))
        if self.silent:
            raise InvalidInputError("no speech was detected in the audio", code="NO_SPEECH")
        segments = (SegmentTiming("Hello there.", 0.1, 0.8), SegmentTiming("General Kenobi.", 1.5, 2.5))
        for segment in segments:
            if on_segment is not None:
                on_segment(segment)
            if self.break_after_first_segment:
                raise DependencyError("the ASR service went away")
        return Transcription(
            text="Hello there. General Kenobi.",
            is_final=True,
            confidence=0.9,
            language="en",
            words=(
                WordTiming("Hello", 0.1, 0.4, 0.9),
                WordTiming("there.", 0.4, 0.8, 0.9),
                WordTiming("General", 1.5, 1.9, 0.9),
                WordTiming("Kenobi.", 1.9, 2.5, 0.9),
            ),
            segments=segments,
        )


class Stack:
    def __init__(self, base: str, container: Container, key: str, other_key: str) -> None:
        self.base, self.container, self.key, self.other_key = base, container, key, other_key
        self._clients: dict[str, openai.AsyncOpenAI] = {}

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        """The official client as the test user (or the owner of ``key``), closed at the end."""
        key = key or self.key
        if key not in self._clients:
            self._clients[key] = openai.AsyncOpenAI(
                base_url=f"{self.base}/v1", api_key=key, max_retries=0, timeout=60
            )
        return self._clients[key]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()

    @property
    def recognizer(self) -> ScriptedRecognizer:
        assert isinstance(self.container.recognizer, ScriptedRecognizer)
        return self.container.recognizer

    @property
    def chat(self) -> FakeChatModel:
        assert isinstance(self.container.chat_model, FakeChatModel)
        return self.container.chat_model


def settings() -> Settings:
    s = Settings(environment="test")
    s.openai.max_upload_mb = 1
    s.openai.cors_origins = ["https://app.example"]
    return s


@pytest_asyncio.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    container = fake_container(
        settings(), recognizer=ScriptedRecognizer(), chat_model=FakeChatModel((PERSONA_REPLY,))
    )
    await container.queue.start()
    try:
        async with running_server(create_app(container.settings, container)) as base:
            (_user, key), (_other, other_key) = (
                await make_user(container, "oa-a"),
                await make_user(container, "oa-b"),
            )
            stack = Stack(base, container, key, other_key)
            try:
                yield stack
            finally:
                await stack.aclose()
    finally:
        await container.queue.stop()


def speech_wav(seconds: float = 1.0) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    return encode_wav((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)


# --- auth and error shapes --------------------------------------------------------------------------


async def test_no_key_and_a_wrong_key_are_401_in_openai_shape(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as http:
        for path in ("/v1/models", "/v1/audio/speech", "/v1/chat/completions", "/v1/audio/transcriptions"):
            method = "GET" if path == "/v1/models" else "POST"
            answer = await http.request(method, path, json={"model": "avatar"} if method == "POST" else None)
            assert answer.status_code == 401, path
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as info:
        await stack.sdk("sk-not-a-key").models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


async def test_bad_bodies_are_400_in_openai_shape(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base, headers=bearer(stack.key)) as http:
        answer = await http.post("/v1/chat/completions", json={"model": "avatar"})
        assert answer.status_code == 400 and "messages" in answer.json()["error"]["message"]
        answer = await http.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 9}
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_speed"
        answer = await http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


# --- models and chat -----------------------------------------------------------------------------------


async def test_models_list_names_the_avatar_and_the_chat_model(stack: Stack) -> None:
    sdk = stack.sdk()
    ids = [m.id async for m in sdk.models.list()]
    assert ids[:2] == ["avatar", stack.container.settings.llm.model]
    assert {"tts-1", "whisper-1"} <= set(ids)
    assert (await sdk.models.retrieve("avatar")).id == "avatar"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("gpt-9")


async def test_an_unknown_chat_model_is_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await stack.sdk().chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"


async def test_the_avatar_model_answers_with_the_persona_and_only_the_callers_memories(stack: Stack) -> None:
    c = stack.container
    async with c.uow() as tx:
        users = {u.name: u for u in await tx.accounts.list_users()}
        for name, text in (("oa-a", "my dog is called Biscuit"), ("oa-b", "my dog is called Rex")):
            session = Session.start(c.clock.now(), owner_id=users[name].user_id)
            await tx.sessions.add(session)
            [vector] = await c.text_embedder.embed([text])
            await tx.memories.add(session.session_id, None, "user", text, vector)
        await tx.commit()
    reply = await stack.sdk().chat.completions.create(
        model="avatar",
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "What is my dog called?"},
        ],
    )
    assert reply.choices[0].message.content == "Hello! Nice to meet you."  # the emotion tag is taken off
    assert reply.choices[0].finish_reason == "stop" and reply.model == "avatar"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    prompt = stack.chat.calls[-1]
    assert prompt[0].role == "system" and "emotion tag" in prompt[0].content  # the persona's rules
    assert "Answer in one sentence." in prompt[0].content
    remembered = "\n".join(m.content for m in prompt if m.role == "system")
    assert "Biscuit" in remembered and "Rex" not in remembered
    assert prompt[-1].content == "What is my dog called?"


async def test_the_chat_model_by_its_own_name_gets_the_messages_as_they_are(stack: Stack) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
    ]
    model = stack.container.settings.llm.model
    reply = await stack.sdk().chat.completions.create(model=model, messages=messages, max_tokens=20)
    assert [(m.role, m.content) for m in stack.chat.calls[-1]] == [
        ("system", "Be terse."),
        ("user", "Say hi"),
    ]
    assert reply.choices[0].message.content == PERSONA_REPLY  # passed through untouched


async def test_chat_streams_openai_chunks_with_usage(stack: Stack) -> None:
    stream = await stack.sdk().chat.completions.create(
        model="avatar",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! Nice to meet you."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_a_chat_model_that_is_down_is_503(stack: Stack) -> None:
    stack.chat.fail_with = ChatModelError(ChatErrorKind.REFUSED, "connection refused")
    try:
        with pytest.raises(openai.InternalServerError) as info:
            await stack.sdk().chat.completions.create(
                model="avatar", messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 503 and "connection refused" not in info.value.message
    finally:
        stack.chat.fail_with = None


# --- speech -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
async def test_alloy_speaks_every_format(stack: Stack, fmt: SpeechFormat) -> None:
    fast = stack.container.fast_tts
    assert isinstance(fast, FakeSynthesizer)
    async with stack.sdk().audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input="Hello there.",
        response_format=fmt,
        speed=1.25,
    ) as response:
        audio = await response.read()
        headers = response.headers
    # The fakes serve no Piper voice: the fast tier's own voice speaks, and the response says so.
    assert "not served here" in headers["x-avatar-notice"]
    request = fast.requests[-1]
    assert (request.voice, request.speed, request.text) == (None, 1.25, "Hello there.")
    if fmt == "pcm":
        assert len(audio) > 1000 and len(audio) % 2 == 0
        return
    decoded = decode_audio(audio)
    assert decoded.duration_s > 0.1 and float(np.abs(decoded.samples).max()) > 0.05


async def test_speech_sse_events(stack: Stack) -> None:
    async with stack.sdk().audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="instant-voice",
        input="Hi there.",
        response_format="pcm",
        stream_format="sse",
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) async for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert deltas and len(pcm) > 1000 and events[-1]["usage"]["total_tokens"] > 0


async def test_instructions_and_voices_by_name_profile_and_ownership(stack: Stack) -> None:
    c = stack.container
    fast = c.fast_tts
    assert isinstance(fast, FakeSynthesizer)
    sdk = stack.sdk()
    await (
        await sdk.audio.speech.create(
            model="tts-1", voice="instant-voice", input="Hi.", instructions="Whisper."
        )
    ).aread()
    assert (fast.requests[-1].voice, fast.requests[-1].instructions) == ("instant-voice", "Whisper.")
    listed = await sdk.get("/audio/voices", cast_to=httpx.Response)
    assert {(v["id"], v["tier"]) for v in listed.json()["data"]} == {
        ("instant-voice", "fast"),
        ("instant-voice", "hq"),
    }
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert info.value.code == "voice_not_found"
    with pytest.raises(openai.NotFoundError):
        await sdk.audio.speech.create(model="tts-9", voice="alloy", input="Hi.")
    async with c.uow() as tx:
        users = {u.name: u for u in await tx.accounts.list_users()}
        pid = uuid.uuid4()
        profile = VoiceProfile(
            pid,
            "Mine",
            f"voice_profiles/{pid}/original.wav",
            (0.0625,) * 256,
            1.0,
            16000,
            "hello",
            users["oa-a"].user_id,
        )
        await tx.voice_profiles.add(profile)
        await tx.commit()
    await c.object_store.put(original_key(pid), pcm16_wav(b"\x00\x10" * 16000, 16000), "audio/wav")
    await (await sdk.audio.speech.create(model="tts-1", voice={"id": str(pid)}, input="Hi.")).aread()
    assert fast.requests[-1].reference is not None and fast.requests[-1].reference.profile_id == str(pid)
    with pytest.raises(openai.NotFoundError):  # somebody else's profile is as unknown as none
        await stack.sdk(stack.other_key).audio.speech.create(model="tts-1", voice=str(pid), input="Hi.")


# --- transcription ---------------------------------------------------------------------------------------


def last_task(stack: Stack) -> TranscriptionTask:
    return stack.recognizer.options[-1][3]


async def test_transcription_formats_and_options_reach_the_recognizer(stack: Stack) -> None:
    sdk = stack.sdk()
    wav = speech_wav()
    plain = await sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav, "audio/wav"), language="en", prompt="Kenobi", temperature=0.3
    )
    assert plain.text == "Hello there. General Kenobi."
    assert plain.usage is not None and plain.usage.type == "duration" and plain.usage.seconds == 1
    assert stack.recognizer.options[-1] == ("en", "Kenobi", 0.3, "transcribe")
    assert stack.recognizer.transcribed[-1] == (32000, 16000)
    verbose = await sdk.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", wav, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "english" and verbose.duration == pytest.approx(1.0)
    assert [w.word for w in verbose.words or []] == ["Hello", "there.", "General", "Kenobi."]
    assert [(s.start, s.end) for s in verbose.segments or []] == [(0.1, 0.8), (1.5, 2.5)]
    words_only = await sdk.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert words_only.words and not words_only.segments
    srt = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="srt")
    assert "1\n00:00:00,100 --> 00:00:00,800\nHello there." in srt
    vtt = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="vtt")
    assert vtt.startswith("WEBVTT") and "00:00:01.500 --> 00:00:02.500" in vtt
    text = await sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav), response_format="text"
    )
    assert text.strip() == "Hello there. General Kenobi."
    with pytest.deprecated_call():  # this SDK marks translations deprecated; they still work
        translated = await sdk.audio.translations.create(model="whisper-1", file=("a.wav", wav))
    assert translated.text and last_task(stack) == "translate"
    stream = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events] == [
        "transcript.text.delta",
        "transcript.text.delta",
        "transcript.text.done",
    ]
    assert [getattr(e, "delta", None) for e in events[:-1]] == ["Hello there.", " General Kenobi."]
    assert "".join(getattr(e, "delta", "") for e in events[:-1]) == getattr(events[-1], "text", None)
    stack.recognizer.break_after_first_segment = True
    try:
        broken = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), stream=True)
        seen: list[str] = []
        with pytest.raises(openai.APIError, match="unavailable"):
            async for event in broken:
                seen.append(event.type)
        assert seen == ["transcript.text.delta"]  # what was decoded came; then OpenAI's error event
    finally:
        stack.recognizer.break_after_first_segment = False


async def test_silence_is_an_empty_transcript_and_bad_files_are_refused(stack: Stack) -> None:
    sdk = stack.sdk()
    stack.recognizer.silent = True
    try:
        raw = await sdk.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("s.wav", speech_wav())
        )
        assert raw.status_code == 200 and raw.headers["x-avatar-notice"] == "NO_SPEECH"
        assert raw.parse().text == ""
    finally:
        stack.recognizer.silent = False
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.audio.transcriptions.create(
            model="whisper-1", file=("x.wav", b"RIFF garbage, not audio" * 50)
        )
    assert info.value.code == "invalid_audio"
    with pytest.raises(openai.APIStatusError) as too_big:
        await sdk.audio.transcriptions.create(model="whisper-1", file=("big.wav", speech_wav(40.0)))
    assert too_big.value.status_code == 413 and too_big.value.code == "audio_too_large"
    with pytest.raises(openai.NotFoundError):
        await sdk.audio.transcriptions.create(model="whisper-9", file=("a.wav", speech_wav()))

    async def chunked() -> AsyncIterator[bytes]:
        yield b"--x\r\n"

    async with httpx.AsyncClient(base_url=stack.base, headers=bearer(stack.key)) as http:
        answer = await http.post(
            "/v1/audio/transcriptions",
            content=chunked(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert answer.status_code == 411 and answer.json()["error"]["code"] == "length_required"


# --- CORS ---------------------------------------------------------------------------------------------------


async def test_cors_is_granted_to_the_configured_origins_on_v1_only(stack: Stack) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(base_url=stack.base) as http:
        answer = await http.options(
            "/v1/chat/completions", headers={**preflight, "Access-Control-Request-Headers": "authorization"}
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in answer.headers
        evil = await http.options(
            "/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in evil.headers
        api = await http.get("/api/v1/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in api.headers


async def test_cors_is_off_by_default() -> None:
    container = fake_container(Settings(environment="test"))
    async with running_server(create_app(container.settings, container)) as base, httpx.AsyncClient() as http:
        answer = await http.options(
            f"{base}/v1/models",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in answer.headers


class VoicelessSynthesizer(FakeSynthesizer):
    """A tier whose service is down: listing its voices fails."""

    async def voices(self) -> list[VoiceInfo]:
        raise DependencyError("the HQ TTS service is unreachable")


async def test_a_tier_that_is_down_does_not_stop_the_other_from_speaking() -> None:
    fast = FakeSynthesizer()
    container = fake_container(
        Settings(environment="test"), fast_tts=fast, hq_tts=VoicelessSynthesizer(TTSMode.HQ)
    )
    async with running_server(create_app(container.settings, container)) as base:
        _user, key = await make_user(container, "tier-down")
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as sdk:
            speech = await sdk.audio.speech.create(
                model="tts-1", voice="nova", input="Still here.", response_format="wav"
            )
            assert decode_audio(speech.content).duration_s > 0.1
            listed = await sdk.get("/audio/voices", cast_to=httpx.Response)
    assert fast.requests[-1].text == "Still here."
    assert [v["tier"] for v in listed.json()["data"]] == ["fast"]
