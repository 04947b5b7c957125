"""The OpenAI Realtime API (``WS /v1/realtime``, docs/realtime.md) on the embedded stack with real
models, driven by the official ``openai`` SDK as any client would: LibriVox speech appended as PCM16
24 kHz at real-time pace, server VAD, input transcription, streamed audio and transcript, heard-text
truncation, a cancelled reply, and the turns stored for the session like the web app's."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from avatar.application.conversation import transcription_id_for
from avatar.bootstrap import Container, build_container
from avatar.infrastructure.resampling import SoxrStreamResampler
from avatar.presentation.app import create_app
from tests.e2e.harness import running_server
from tests.e2e.test_conversation import e2e_settings
from tests.support.audio import SpeechClip
from tests.support.auth import bearer, make_user

pytestmark = pytest.mark.slow

#: Generous: real models on a small shared CPU (never a latency assertion).
WAIT_S = 300.0
CHUNK_MS = 100
STORY = "Tell me a long story about a dragon and a princess."


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[tuple[str, Container]]:
    settings = e2e_settings(tmp_path_factory.mktemp("realtime"), module_database_url, llama_server)
    settings.llm.max_tokens = 120  # long enough that a reply is still running when it is cancelled
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


class Events:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []

    async def until(self, kind: str, timeout_s: float = WAIT_S, *, where: Any = None) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.conn.recv()
                self.seen.append(event)
                if event.type == "error":
                    raise AssertionError(f"unexpected error event: {event.error}")
                if kind == "*" or (event.type == kind and (where is None or where(event))):
                    return event

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))


async def settled(events: Events) -> Any:
    """Receive until every utterance the VAD confirmed has ended and every committed item has its
    response done (server VAD answers each one); the last ``response.done``."""
    while not (
        events.count("input_audio_buffer.speech_started") == events.count("input_audio_buffer.speech_stopped")
        and 0 < events.count("input_audio_buffer.committed") == events.count("response.done")
    ):
        await events.until("*")
    return events.of("response.done")[-1]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def send_speech(conn: Any, pcm16k: bytes) -> None:
    """The clip as PCM16 24 kHz in 100 ms appends at real-time pace, then silence for the endpoint."""
    resampler = SoxrStreamResampler(16000, 24000)
    pcm = resampler.push(pcm16k) + resampler.flush() + bytes(24000 * 2 * 3 // 2)
    step = 24000 * 2 * CHUNK_MS // 1000
    for start in range(0, len(pcm), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + step]).decode())
        await asyncio.sleep(CHUNK_MS / 1000.0)


async def test_a_spoken_realtime_conversation(
    stack: tuple[str, Container], librivox: list[SpeechClip]
) -> None:
    base, container = stack
    _user, key = await make_user(container, f"realtime-{uuid.uuid4().hex[:8]}")
    client = AsyncOpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)
    clip = librivox[0]
    async with client.realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer in English.",
                "audio": {
                    "input": {"transcription": {"model": "whisper-1"}},
                    "output": {"voice": "alloy"},
                },
            }
        )
        updated = await events.until("session.updated")
        assert updated.session.audio.input.turn_detection.type == "server_vad"

        # 1. speech at real-time pace: server VAD, the transcript, then a spoken reply
        sender = asyncio.create_task(send_speech(conn, clip.pcm))
        await events.until("input_audio_buffer.speech_started")
        await sender
        # A pause inside the clip may end an utterance early; its reply is then interrupted by the
        # rest of the speech, and the reply that counts is the last one.
        done = await settled(events)
        assert done.response.status == "completed"
        assert events.of("input_audio_buffer.speech_stopped") and events.of("input_audio_buffer.committed")
        transcribed = events.of("conversation.item.input_audio_transcription.completed")
        heard = " ".join(e.transcript for e in transcribed)
        expected = set(words(clip.transcript))
        assert len(expected & set(words(heard))) >= len(expected) // 2, heard
        item = done.response.output[0]
        reply_text = item.content[0].transcript
        deltas = [e for e in events.of("response.output_audio.delta") if e.response_id == done.response.id]
        audio = b"".join(base64.b64decode(e.delta) for e in deltas)
        transcript = "".join(
            e.delta
            for e in events.of("response.output_audio_transcript.delta")
            if e.response_id == done.response.id
        )
        assert audio and reply_text and transcript.strip() == reply_text
        assert done.response.usage.output_tokens > 0

        # 2. the listener heard only half of that reply: only the clauses heard stay in the turn
        audio_ms = len(audio) // 2 * 1000 // 24000
        await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=audio_ms // 2)
        truncated = await events.until("conversation.item.truncated")
        assert truncated.item_id == item.id and truncated.audio_end_ms == audio_ms // 2

        # 3. a typed request, cancelled while the reply is being written
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": STORY}],
            }
        )
        await conn.response.create()
        created = await events.until("response.created")
        await events.until(
            "response.output_audio_transcript.delta", where=lambda e: e.response_id == created.response.id
        )
        await conn.response.cancel()
        cancelled = await events.until("response.done", where=lambda e: e.response.id == created.response.id)
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "client_cancelled"

    # the turns exist for that session, as for the web app: the spoken one truncated to what was heard
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        turns: list[dict[str, Any]] = []
        for _ in range(600):
            turns = (await http.get(f"/api/v1/sessions/{session_id}/turns")).json()["turns"]
            if turns and turns[-1]["interrupted"] and turns[-1]["user_input"] == STORY:
                break
            await asyncio.sleep(0.1)
        spoken = next(t for t in turns if t["ai_response"] is not None and t["stage_latency_ms"].get("e2e"))
        typed = turns[-1]
        assert typed["interrupted"] is True and typed["user_input"] == STORY
        truncated_turn = [t for t in turns if t["turn_id"] != typed["turn_id"]][-1]
        assert truncated_turn["interrupted"] is True
        heard_words, reply_words = words(truncated_turn["ai_response"]), words(reply_text)
        assert heard_words == reply_words[: len(heard_words)] and len(heard_words) < len(reply_words)
        assert spoken["transcription"]["audio_url"] and spoken["audio"]
        # the utterance's prosody is scored like a web app utterance
        tid = spoken["transcription"]["transcription_id"]
        for _ in range(1200):
            scored = await http.get(f"/api/v1/prosody/{tid}")
            if scored.status_code == 200:
                break
            await asyncio.sleep(0.25)
        assert scored.status_code == 200, scored.text
    async with container.uow() as tx:
        record = await tx.sessions.get(uuid.UUID(session_id))
        stored = await tx.turns.list_for_session(uuid.UUID(session_id))
        transcription = await tx.transcriptions.get(transcription_id_for(stored[0].turn_id))
    assert record is not None and record.owner_id == _user.user_id
    assert transcription is not None and transcription.text


async def test_text_only_reply(stack: tuple[str, Container]) -> None:
    base, container = stack
    _user, key = await make_user(container, f"realtime-text-{uuid.uuid4().hex[:8]}")
    client = AsyncOpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)
    async with client.realtime.connect(model="avatar") as conn:
        events = Events(conn)
        await events.until("session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await events.until("session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}
        )
        await conn.response.create()
        done = await events.until("response.done")
    text = "".join(e.delta for e in events.of("response.output_text.delta"))
    assert done.response.status == "completed" and done.response.output_modalities == ["text"]
    assert text.strip() == done.response.output[0].content[0].text
    assert not events.of("response.output_audio.delta")
