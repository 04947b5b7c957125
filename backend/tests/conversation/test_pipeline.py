"""The per-session pipeline with fakes: ordering, streaming overlap, barge-in, one turn at a time,
persistence with retries and loud failure, the HQ pass, admission control and tokens."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from avatar.application.brain import BrainDeps, load_persona
from avatar.application.conversation import (
    HQ_TOPIC,
    PROSODY_TOPIC,
    BrainReplyEngine,
    ConversationConfig,
    ConversationDeps,
    ConversationSession,
    SessionManager,
    TokenError,
    issue_token,
    make_hq_handler,
    transcription_id_for,
    verify_token,
)
from avatar.application.ports.asr import TranscriptEvent, TranscriptEventKind
from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModelError
from avatar.application.ports.tts import SynthesisRequest
from avatar.domain.errors import CapacityError, NotFoundError
from avatar.domain.models import AudioChunk, ConversationTurn, Session, Transcription, TTSMode
from avatar.infrastructure.instant.engines import InstantSynthesisStream
from avatar.presentation.wire import to_wire
from avatar.settings import Settings
from avatar_common.text import ClauseChunker
from tests.fakes import (
    FakeChatModel,
    FakeClock,
    FakeDatabase,
    FakeNotifier,
    FakeObjectStore,
    FakeRecognizer,
    FakeSynthesizer,
    FakeTaskQueue,
    FakeTextEmbedder,
    RecordingConversationMetrics,
)

Message = dict[str, Any]
REPLY = "[happy] Hello there, my friend! It is lovely to hear from you today. How was your day?"


def tone(ms: int, sr: int = 16000) -> AudioChunk:
    n = sr * ms // 1000
    pcm = b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )
    return AudioChunk(pcm=pcm, sample_rate=sr)


class Rig:
    def __init__(
        self,
        *,
        replies: tuple[str, ...] = (REPLY,),
        token_delay_s: float = 0.0,
        tts_delay_s: float = 0.0,
        texts: tuple[str, ...] = ("hello there",),
    ) -> None:
        self.clock = FakeClock()
        self.recognizer = FakeRecognizer(texts=texts, utterance_ms=1000.0)
        self.chat = FakeChatModel(replies=replies, token_delay_s=token_delay_s)
        self.tts = FakeSynthesizer(TTSMode.FAST, delay_s=tts_delay_s)
        self.hq = FakeSynthesizer(TTSMode.HQ)
        self.store = FakeObjectStore()
        self.db = FakeDatabase()
        self.queue = FakeTaskQueue()
        self.metrics = RecordingConversationMetrics()
        self.engine = BrainReplyEngine(
            BrainDeps(self.chat, FakeTextEmbedder(), self.db, load_persona(Settings().llm.persona_file))
        )
        self.deps = ConversationDeps(
            recognizer=self.recognizer,
            replies=self.engine,
            fast_tts=self.tts,
            clock=self.clock,
            object_store=self.store,
            queue=self.queue,
            uow=self.db,
            metrics=self.metrics,
            chunker_factory=ClauseChunker,
            config=ConversationConfig(),
        )
        self.messages: list[Message] = []

    async def session(self, **kwargs: Any) -> ConversationSession:
        record = Session.start(self.clock.now())
        async with self.db() as tx:
            await tx.sessions.add(record)
            await tx.commit()
        session = ConversationSession(record.session_id, self.deps, **kwargs)
        session.outbox.attached = True
        await session.start()
        return session

    async def until(self, session: ConversationSession, done: Callable[[Message], bool]) -> list[Message]:
        """Collect outgoing messages until one satisfies ``done`` (guarded against hangs)."""

        async def pump() -> None:
            while True:
                message = to_wire(await session.outbox.get())
                self.messages.append(message)
                if done(message):
                    return

        await asyncio.wait_for(pump(), 20)
        return self.messages


def kinds(messages: list[Message]) -> list[str]:
    return [m["type"] for m in messages]


def is_type(kind: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == kind


class ClockedChat(FakeChatModel):
    """Each token of a reply takes ``per_token_s`` of the rig's clock."""

    def __init__(self, clock: FakeClock, replies: tuple[str, ...], per_token_s: float) -> None:
        super().__init__(replies=replies)
        self.clock, self.per_token_s = clock, per_token_s

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        session: uuid.UUID | None = None,
    ) -> AsyncGenerator[str, None]:
        reply = super().stream_chat(messages, max_tokens=max_tokens, temperature=temperature, session=session)
        async with contextlib.aclosing(reply):
            async for token in reply:
                self.clock.advance(self.per_token_s)
                yield token


async def test_llm_ttft_ends_at_the_models_first_token_even_when_the_text_waits_for_a_clause() -> None:
    """A reply without an emotion tag releases no text before its first clause (the emotion is
    guessed from it): ``llm_ttft`` still times the model's first token, ``first_clause`` the clause."""
    rig = Rig()
    chat = ClockedChat(rig.clock, ("Well then, it is nice to meet you today.",), per_token_s=0.1)
    persona = load_persona(Settings().llm.persona_file)
    engine = BrainReplyEngine(BrainDeps(chat, FakeTextEmbedder(), rig.db, persona))
    rig.deps = replace(rig.deps, replies=engine)
    session = await rig.session()
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    latency = messages[-1]["latency_ms"]
    # The first token, one token's time; the parser released "Well then," only at the third token
    # (300 ms), and the chunker's first clause is the whole sentence (too few words before the comma).
    assert latency["llm_ttft"] == pytest.approx(100.0)
    assert latency["first_clause"] == pytest.approx(900.0)
    await session.aclose()


async def test_a_turn_streams_in_order_and_is_persisted() -> None:
    rig = Rig()
    session = await rig.session()
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    order = kinds(messages)
    assert (
        order.index("speech_started")
        < order.index("transcription_partial")
        < order.index("transcription_final")
        < order.index("turn_started")
        < order.index("emotion")
        < order.index("llm_token")
        < order.index("audio_chunk")
        < order.index("turn_completed")
    )
    final = next(m for m in messages if m["type"] == "transcription_final")
    assert final["text"] == "hello there"
    emotion = next(m for m in messages if m["type"] == "emotion")
    assert emotion["emotion"] == "happy"
    tokens = "".join(m["token"] for m in messages if m["type"] == "llm_token")
    assert "[happy]" not in tokens and "Hello there" in tokens
    audio = [m for m in messages if m["type"] == "audio_chunk"]
    assert [m["seq"] for m in audio] == list(range(len(audio)))
    assert {m["mode"] for m in audio} == {"fast"}
    completed = messages[-1]
    assert completed["interrupted"] is False and completed["text"] == tokens.strip()
    assert {"asr_final", "llm_ttft", "first_clause", "tts_first_chunk", "e2e"} <= set(completed["latency_ms"])

    await session.aclose()
    turn_id = uuid.UUID(completed["turn_id"])
    tables = rig.db.tables
    turn = tables.turns[turn_id]
    assert turn.user_input == "hello there" and turn.ai_response == completed["text"]
    assert turn.stage_latency_ms.keys() == completed["latency_ms"].keys()
    row = tables.transcriptions[transcription_id_for(turn_id)]
    assert row[0] == turn_id and row[1].text == "hello there" and row[3] == ["hello"]
    assert row[2] is not None and "raw_inputs/2026/01/01/" in row[2]
    # docs/design-notes.md §5 layout, timestamps in epoch ms (2026-01-01T00:00:00Z on the fake clock)
    raw_key = f"raw_inputs/2026/01/01/{session.session_id}_{turn_id}_1767225600000.wav"
    assert raw_key in rig.store.objects
    fast = [a for a in tables.synthesized.values() if a.turn_id == turn_id]
    assert len(fast) == 1 and fast[0].mode is TTSMode.FAST
    assert fast[0].audio_url.endswith(f"synthesized/fast/{turn_id}_fast_1767225600000.wav")
    prosody = [p for topic, p in rig.queue.published if topic == PROSODY_TOPIC]
    assert prosody and prosody[0]["transcription_id"] == str(transcription_id_for(turn_id))
    assert [t for t, _ in rig.queue.published].count(HQ_TOPIC) == 0  # fast mode: no HQ pass
    assert rig.metrics.e2e


async def test_audio_streams_while_the_model_is_still_writing() -> None:
    rig = Rig(token_delay_s=0.01)
    session = await rig.session()
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    order = kinds(messages)
    last_token = len(order) - 1 - order[::-1].index("llm_token")
    assert order.index("audio_chunk") < last_token
    await session.aclose()


async def test_hq_mode_queues_the_hq_pass() -> None:
    rig = Rig()
    session = await rig.session(tts_mode=TTSMode.HQ)
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    await session.writer.drain()
    hq = [p for topic, p in rig.queue.published if topic == HQ_TOPIC]
    assert len(hq) == 1 and hq[0]["turn_id"] == messages[-1]["turn_id"]
    assert hq[0]["text"] == messages[-1]["text"]
    await session.aclose()


async def test_speech_during_a_reply_interrupts_it_and_the_new_utterance_is_answered() -> None:
    rig = Rig(replies=(REPLY, "[neutral] Sure, go ahead."), token_delay_s=0.05, texts=("hello there", "wait"))
    session = await rig.session()
    await session.push_audio(tone(1000))
    first = (await rig.until(session, is_type("audio_chunk")))[-1]["text"]
    # the first clause is fully sent once the second one's audio starts
    await rig.until(session, lambda m: m["type"] == "audio_chunk" and m["text"] != first)
    rig.clock.advance(30.0)  # the first clause has been played out by now
    await session.push_audio(tone(300))  # speech starts: barge-in
    messages = await rig.until(session, is_type("interrupted"))
    interrupted = messages[-1]
    assert rig.chat.cancelled == 1
    assert rig.tts.streams[-1].closed
    first_clause = next(m["text"] for m in messages if m["type"] == "audio_chunk")
    assert interrupted["heard_text"] == first_clause.strip()
    await session.push_audio(tone(700))  # the rest of the new utterance
    messages = await rig.until(session, lambda m: m["type"] == "turn_completed" and not m["interrupted"])
    assert messages[-1]["text"] == "Sure, go ahead."
    await session.aclose()
    turns = sorted(rig.db.tables.turns.values(), key=lambda t: t.turn_number)
    assert [t.turn_number for t in turns] == [1, 2]
    assert turns[0].interrupted and turns[0].ai_response == first_clause.strip()
    assert turns[1].user_input == "wait" and not turns[1].interrupted
    history = rig.engine.brain(session.session_id).history
    assert history[0].assistant == first_clause.strip().rstrip(",")
    assert rig.metrics.interruptions == 1


async def test_client_interrupt_keeps_what_the_client_heard() -> None:
    rig = Rig(token_delay_s=0.05)
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("audio_chunk"))
    assert await session.interrupt(heard_text="Hello there,")
    messages = await rig.until(session, is_type("turn_completed"))
    assert any(m["type"] == "interrupted" and m["heard_text"] == "Hello there," for m in messages)
    assert messages[-1]["interrupted"] is True
    assert not session.replying
    await session.aclose()
    (turn,) = rig.db.tables.turns.values()
    assert turn.interrupted and turn.ai_response == "Hello there,"


async def test_played_ms_zero_means_nothing_was_heard() -> None:
    rig = Rig(token_delay_s=0.05)
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("audio_chunk"))
    await session.interrupt(played_ms=0)
    messages = await rig.until(session, is_type("interrupted"))
    assert messages[-1]["heard_text"] == ""
    await session.aclose()


async def test_one_reply_at_a_time() -> None:
    rig = Rig(
        replies=("[neutral] One, two, three, four, five, six, seven.",),
        token_delay_s=0.05,
        texts=("first", "second"),
    )
    session = await rig.session()
    await session.text_input("first")
    await session.text_input("second")
    messages = await rig.until(session, lambda m: m["type"] == "turn_completed" and not m["interrupted"])
    started = [m for m in messages if m["type"] == "turn_started"]
    assert [m["turn_number"] for m in started] == [1, 2]
    completed = [m for m in messages if m["type"] == "turn_completed"]
    assert [m["interrupted"] for m in completed] == [True, False]
    # no token of turn 1 after turn 2 started
    second = started[1]["turn_id"]
    after = messages[messages.index(started[1]) :]
    assert all(m.get("turn_id") == second for m in after if m["type"] in ("llm_token", "audio_chunk"))
    await session.aclose()


async def test_a_failed_upload_is_reported_at_once_not_retried_by_the_writer() -> None:
    # Retries belong to the adapter (the S3 store retries its own blips); the writer runs a write
    # once, so a put that fails once is reported even though a second try would have worked.
    rig = Rig()
    rig.store.fail_puts = 1
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("turn_completed"))
    await session.writer.drain()
    while len(session.outbox):
        rig.messages.append(to_wire(await session.outbox.get()))
    await session.aclose()
    errors = [m for m in rig.messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["PERSISTENCE_FAILED"]
    assert "turn 1 input audio" in errors[0]["message"]
    assert not any(k.startswith("raw_inputs/") for k in rig.store.objects)
    assert any(k.startswith("synthesized/fast/") for k in rig.store.objects)  # the next write ran
    assert rig.metrics.write_failures == ["audio"]
    assert session.writer.failed == 1
    assert not [p for topic, p in rig.queue.published if topic == PROSODY_TOPIC]


async def test_a_lasting_database_failure_is_reported_loudly() -> None:
    rig = Rig()
    session = await rig.session()
    rig.db.fail_next = 1000
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("turn_completed"))
    await session.writer.drain()
    while len(session.outbox):
        rig.messages.append(to_wire(await session.outbox.get()))
    errors = [m for m in rig.messages if m["type"] == "error"]
    assert errors and all(e["code"] == "PERSISTENCE_FAILED" for e in errors)
    assert any("turn 1 row" in e["message"] for e in errors)
    assert rig.metrics.write_failures
    assert session.writer.failed == len(errors)
    rig.db.fail_next = 0
    await session.aclose()


async def test_hq_handler_stores_the_audio_and_notifies() -> None:
    rig = Rig()
    notifier = FakeNotifier()
    handler = make_hq_handler(
        hq_tts=rig.hq, object_store=rig.store, uow=rig.db, notifier=notifier, clock=rig.clock
    )
    record = Session.start(rig.clock.now(), owner_id=uuid.uuid4())
    session_id, turn_id = record.session_id, uuid.uuid4()
    async with rig.db() as tx:
        await tx.sessions.add(record)
        await tx.turns.add(
            ConversationTurn(turn_id=turn_id, session_id=session_id, turn_number=1, user_input="hi")
        )
        await tx.commit()
    await handler({"session_id": str(session_id), "turn_id": str(turn_id), "text": "Hello there."})
    (key,) = [k for k in rig.store.objects if k.startswith("synthesized/hq/")]
    assert key == f"synthesized/hq/{turn_id}_hq_1767225600000.wav"
    ((sent_to, message),) = notifier.sent
    assert sent_to == session_id and message["type"] == "hq_ready" and key in message["url"]
    (row,) = rig.db.tables.synthesized.values()
    assert row.mode is TTSMode.HQ and row.turn_id == turn_id


async def test_hq_task_of_an_erased_session_stores_nothing() -> None:
    # docs/security.md, "Delete my data": a task queued before the erasure finds the session gone.
    rig = Rig()
    notifier = FakeNotifier()
    handler = make_hq_handler(
        hq_tts=rig.hq, object_store=rig.store, uow=rig.db, notifier=notifier, clock=rig.clock
    )
    await handler({"session_id": str(uuid.uuid4()), "turn_id": str(uuid.uuid4()), "text": "Hello there."})
    assert rig.store.objects == {} and notifier.sent == [] and not rig.db.tables.synthesized


async def test_admission_control_refuses_before_opening_anything() -> None:
    rig = Rig()
    manager = SessionManager(rig.deps, max_sessions=1, grace_s=60)
    ids = []
    for _ in range(2):
        record = Session.start(rig.clock.now())
        async with rig.db() as tx:
            await tx.sessions.add(record)
            await tx.commit()
        ids.append(record.session_id)
    conn_a, conn_b = object(), object()
    session, resumed, _ = await manager.attach(ids[0], conn_a)
    assert not resumed and len(rig.recognizer.streams) == 1
    with pytest.raises(CapacityError):
        await manager.attach(ids[1], conn_b)
    assert len(rig.recognizer.streams) == 1
    with pytest.raises(NotFoundError):
        await manager.attach(uuid.uuid4(), conn_b)
    # reconnect within the grace period: same live session, history kept
    manager.detach(ids[0], conn_a)
    again, resumed, previous = await manager.attach(ids[0], conn_b)
    assert again is session and resumed and previous is None
    await manager.aclose()
    assert not manager.is_live(ids[0])


def test_tokens() -> None:
    sid = uuid.uuid4()
    token = issue_token("secret", sid, now_s=1000, ttl_s=60)
    verify_token("secret", sid, token, now_s=1030)
    for bad_sid, bad_token, now, reason in [
        (sid, None, 1030, "required"),
        (sid, "garbage", 1030, "malformed"),
        (uuid.uuid4(), token, 1030, "does not belong"),
        (sid, issue_token("other", sid, 1000, 60), 1030, "does not belong"),
        (sid, token, 2000, "expired"),
    ]:
        with pytest.raises(TokenError, match=reason):
            verify_token("secret", bad_sid, bad_token, now_s=now)


async def test_another_replica_resumes_from_the_shared_redis_state(
    redis_url: str, redis_namespace: str
) -> None:
    from avatar.infrastructure.queue import redis_client
    from avatar.infrastructure.session_state import RedisSessionStateStore

    rig = Rig(
        replies=("[happy] Nice to meet you, Alice.", "[neutral] Your name is Alice."),
        texts=("my name is alice", "what is my name"),
    )
    # Two replicas: their own process state (manager, brains, Redis connection); shared DB and Redis.
    deps_b = replace(
        rig.deps,
        replies=BrainReplyEngine(
            BrainDeps(rig.chat, FakeTextEmbedder(), rig.db, load_persona(Settings().llm.persona_file))
        ),
    )
    clients = [redis_client(redis_url), redis_client(redis_url)]
    replica_a = SessionManager(
        rig.deps,
        max_sessions=2,
        grace_s=60,
        state_store=RedisSessionStateStore(clients[0], namespace=redis_namespace),
    )
    store_b = RedisSessionStateStore(clients[1], namespace=redis_namespace)
    replica_b = SessionManager(deps_b, max_sessions=2, grace_s=60, state_store=store_b)
    try:
        record = Session.start(rig.clock.now())
        async with rig.db() as tx:
            await tx.sessions.add(record)
            await tx.commit()
        sid = record.session_id
        token = issue_token("secret", sid, now_s=1000, ttl_s=10**9)
        first, resumed, _ = await replica_a.attach(sid, object(), token)
        assert not resumed
        await first.set_tts_mode(TTSMode.HQ, voice="amy")
        await first.push_audio(tone(1000))
        await rig.until(first, lambda m: m["type"] == "turn_completed")
        await replica_a.aclose()  # replica A goes away; its state stays in Redis

        stored = await store_b.load(sid)
        assert stored is not None and stored.accepts(token) and stored.extra["turn_count"] == "1"
        with pytest.raises(TokenError):  # a token of the same session but not the one it was given
            await replica_b.attach(sid, object(), issue_token("secret", sid, now_s=2000, ttl_s=10**9))
        assert not replica_b.is_live(sid)
        second, resumed, _ = await replica_b.attach(sid, object(), token)
        assert resumed and second is not first
        context = second.context
        assert (context.tts_mode, context.voice, context.turn_count) == (TTSMode.HQ, "amy", 1)
        rig.messages = []
        await second.push_audio(tone(1000))
        messages = await rig.until(second, lambda m: m["type"] == "turn_completed")
        assert next(m for m in messages if m["type"] == "turn_started")["turn_number"] == 2
        prompt = " ".join(m.content for m in rig.chat.calls[-1])
        assert "my name is alice" in prompt and "Nice to meet you, Alice." in prompt
    finally:
        await replica_a.aclose()
        await replica_b.aclose()
        for client in clients:
            await client.aclose()


async def _final_latency(
    rig: Rig, session: ConversationSession, *, stream_time_ms: float = 1500.0, **extra: float
) -> dict[str, float]:
    """Hand the session one final (decoded in 80 ms, audio 200-1000 ms) and return its turn's stages."""
    final = Transcription(
        text="hello there",
        is_final=True,
        confidence=0.9,
        latency_ms=80.0,
        audio_start_ms=200.0,
        audio_end_ms=1000.0,
        **extra,  # type: ignore[arg-type]
    )
    await session._on_event(TranscriptEvent(TranscriptEventKind.FINAL, final, stream_time_ms=stream_time_ms))
    messages = await rig.until(session, is_type("turn_completed"))
    latency: dict[str, float] = messages[-1]["latency_ms"]
    return latency


async def test_the_endpoint_wait_is_a_stage_of_its_own() -> None:
    rig = Rig()
    session = await rig.session()
    # the result came 500 ms of (live) audio after the speech ended, 80 ms of it decoding
    latency = await _final_latency(rig, session)
    assert (latency["endpoint"], latency["asr_final"]) == (420.0, 80.0)
    assert latency["e2e"] == 500.0  # the fake clock does not move: the rest of the path reads 0
    assert ("e2e", 0.5) in rig.metrics.stages
    await session.aclose()


async def test_the_endpoint_is_timed_from_where_the_speech_itself_ended() -> None:
    """The recognizer's tail of silence and the VAD's late decision are part of the wait the person
    has: the endpoint stage runs from the last loud sample (docs/adr/0014-voice-latency.md)."""
    rig = Rig()
    session = await rig.session()
    # the utterance's audio runs on 370 ms past the last loud sample
    latency = await _final_latency(rig, session, speech_end_ms=630.0)
    assert (latency["endpoint"], latency["asr_final"]) == (790.0, 80.0)
    assert latency["e2e"] == 870.0
    await session.aclose()


async def test_the_endpoint_counts_the_time_since_the_newest_audio_arrived() -> None:
    """A live client sends audio as it is recorded: a result 40 ms after the newest chunk arrived
    is 40 ms later than the stream clock says."""
    rig = Rig()
    session = await rig.session()
    await session.push_audio(AudioChunk(pcm=bytes(3200), sample_rate=16000))
    rig.clock.advance(0.04)
    latency = await _final_latency(rig, session)
    assert latency["endpoint"] == 460.0
    await session.aclose()


async def test_the_endpoint_counts_from_the_newest_audio_not_where_the_recognizer_decided() -> None:
    """The recognizer decides inside a chunk, so its stream clock can stop short of the audio that
    has arrived: the endpoint stage counts to the newest sample handed to it."""
    rig = Rig()
    session = await rig.session()
    for _ in range(16):  # 1600 ms of (silent) audio arrived; the recognizer decided at 1500 ms
        await session.push_audio(AudioChunk(pcm=bytes(3200), sample_rate=16000))
    rig.clock.advance(0.04)
    latency = await _final_latency(rig, session)
    assert latency["endpoint"] == 1600.0 - 1000.0 + 40.0 - 80.0
    await session.aclose()


async def test_a_model_reply_without_speakable_text_is_answered_with_the_fallback() -> None:
    rig = Rig(replies=("[sad]",))
    session = await rig.session()
    await session.text_input("hello")
    messages = await rig.until(session, is_type("turn_completed"))
    assert messages[-1]["text"] and "[" not in messages[-1]["text"]
    assert any(m["type"] == "audio_chunk" for m in messages)  # the person hears something
    assert not any(m["type"] == "notice" and m["code"] == "EMPTY_REPLY" for m in messages)
    await session.aclose()


async def _voice_rig(notice: str | None) -> tuple[Rig, uuid.UUID]:
    """A rig whose voice resolver is the orchestrator's real wiring, with one stored profile."""
    from avatar.application.voice_profiles import original_key
    from avatar.bootstrap import conversation_deps
    from avatar.domain.models import VoiceProfile
    from avatar_common.audio import pcm16_to_wav
    from tests.fakes import fake_container

    rig = Rig()
    rig.tts.notice = notice
    container = fake_container(Settings(_env_file=None), uow=rig.db, object_store=rig.store, fast_tts=rig.tts)
    rig.deps.voice_resolver = conversation_deps(container, rig.engine).voice_resolver
    profile_id = uuid.uuid4()
    embedding = tuple([1.0] + [0.0] * 255)
    async with rig.db() as tx:
        await tx.voice_profiles.add(
            VoiceProfile(
                profile_id,
                "Mina",
                f"s3://avatar-audio/{original_key(profile_id)}",
                embedding,
                5.0,
                16000,
                transcript="hello there",
            )
        )
        await tx.commit()
    await rig.store.put(original_key(profile_id), pcm16_to_wav(tone(500).pcm, 16000), "audio/wav")
    return rig, profile_id


async def test_the_chosen_voice_profile_conditions_the_reply_and_a_substitution_is_announced() -> None:
    rig, profile_id = await _voice_rig("piper cannot clone voices: speaking with the closest stock voice")
    session = await rig.session()
    await session.set_tts_mode(TTSMode.FAST, voice_profile_id=profile_id)
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    reference = rig.tts.requests[-1].reference
    assert reference is not None and reference.profile_id == str(profile_id)
    assert reference.embedding[0] == 1.0 and reference.transcript == "hello there"
    assert reference.sample_rate == 16000 and len(reference.pcm) == len(tone(500).pcm)
    notices = [m for m in messages if m["type"] == "notice"]
    assert [n["code"] for n in notices] == ["VOICE_SUBSTITUTED"]
    state = next(m for m in messages if m["type"] == "session_state")
    assert state["voice_profile_id"] == str(profile_id)


async def test_an_unknown_voice_profile_is_an_error_and_the_default_voice_stays() -> None:
    rig, _ = await _voice_rig(None)
    session = await rig.session()
    await session.set_tts_mode(TTSMode.FAST, voice_profile_id=uuid.uuid4())
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["VOICE_PROFILE_NOT_FOUND"]
    assert rig.tts.requests and all(r.reference is None for r in rig.tts.requests)
    assert session.context.voice_profile_id is None


async def test_push_to_talk_with_nothing_said_is_a_notice_not_an_error() -> None:
    rig = Rig()
    session = await rig.session()
    await session.end_utterance()
    messages = await rig.until(session, is_type("notice"))
    assert messages[-1] == {"type": "notice", "code": "NO_SPEECH", "message": "no speech was heard"}
    assert not [m for m in messages if m["type"] == "error"]


async def drain(rig: Rig, session: ConversationSession, settle_s: float = 0.3) -> list[Message]:
    """Everything the session sends until it has been quiet for ``settle_s``."""
    while True:
        try:
            rig.messages.append(to_wire(await asyncio.wait_for(session.outbox.get(), settle_s)))
        except TimeoutError:
            return rig.messages


async def test_speech_and_the_client_interrupt_at_once_interrupt_the_reply_once() -> None:
    # The web app sends `interrupt` when its own VAD hears speech; the server's VAD hears the same
    # speech: both reach the session together and must be reported as one interruption.
    rig = Rig(token_delay_s=0.05)
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("audio_chunk"))
    results = await asyncio.gather(session.push_audio(tone(300)), session.interrupt(heard_text="Hello"))
    assert results[1] is True
    messages = await drain(rig, session)
    interrupted = [m for m in messages if m["type"] == "interrupted"]
    completed = [m for m in messages if m["type"] == "turn_completed"]
    assert len(interrupted) == 1 and interrupted[0]["heard_text"] == "Hello"
    assert len(completed) == 1 and completed[0]["interrupted"] is True
    assert rig.metrics.interruptions == 1
    # a second stop press for the same reply does nothing either
    assert await session.interrupt() is False
    await session.aclose()
    (turn,) = rig.db.tables.turns.values()
    assert turn.interrupted and turn.ai_response == "Hello"


async def test_server_vad_and_client_interrupt_race_the_other_way_round() -> None:
    rig = Rig(token_delay_s=0.05)
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("audio_chunk"))
    speech = TranscriptEvent(TranscriptEventKind.SPEECH_STARTED, stream_time_ms=1.0)
    await asyncio.gather(session._on_event(speech), session.interrupt(played_ms=0))
    messages = await drain(rig, session)
    assert [m["type"] for m in messages].count("interrupted") == 1
    assert rig.metrics.interruptions == 1
    await session.aclose()


async def test_the_fallback_reply_for_an_unreachable_model_is_announced() -> None:
    rig = Rig()
    rig.chat.fail_with = ChatModelError(ChatErrorKind.REFUSED, "connection refused")
    session = await rig.session()
    await session.text_input("are you there?")
    messages = await rig.until(session, is_type("turn_completed"))
    started = next(m for m in messages if m["type"] == "turn_started")
    notices = [m for m in messages if m["type"] == "notice" and m["code"] == "LLM_UNAVAILABLE"]
    assert len(notices) == 1 and notices[0]["turn_id"] == started["turn_id"]
    assert "refused" in str(notices[0]["message"])
    # the fallback is spoken
    assert messages[-1]["text"] and any(m["type"] == "audio_chunk" for m in messages)
    assert not any(m["type"] == "error" for m in messages)
    await session.aclose()


async def test_a_model_too_busy_to_answer_in_time_is_a_busy_notice_not_unavailable() -> None:
    rig = Rig()
    rig.chat.fail_with = ChatModelError(ChatErrorKind.BUSY, "no model slot became free within 20 s")
    session = await rig.session()
    await session.text_input("are you there?")
    messages = await rig.until(session, is_type("turn_completed"))
    started = next(m for m in messages if m["type"] == "turn_started")
    codes = [m["code"] for m in messages if m["type"] == "notice"]
    assert codes == ["BUSY"]
    busy = next(m for m in messages if m["type"] == "notice")
    assert busy["turn_id"] == started["turn_id"]
    await session.aclose()


async def test_a_normal_reply_has_no_unavailable_notice() -> None:
    rig = Rig()
    session = await rig.session()
    await session.text_input("hi")
    messages = await rig.until(session, is_type("turn_completed"))
    assert not any(m["type"] == "notice" for m in messages)
    await session.aclose()


async def test_the_wired_chunker_starts_speech_before_a_long_first_sentence_ends() -> None:
    """The composition root's chunker keeps the first spoken chunk short (``tts.first_chunk_max_words``):
    the voice gets the first words at once, not the whole first sentence."""
    from avatar.bootstrap import conversation_deps
    from tests.fakes import fake_container

    long_first = (
        "[happy] I really love the way you describe the old town and the river at night because it "
        "sounds so calm. Tell me more."
    )
    for max_words, first in ((10, "I really love the way you describe the old town"), (0, None)):
        rig = Rig(replies=(long_first,))
        settings = Settings(_env_file=None)
        settings.tts.first_chunk_max_words = max_words
        container = fake_container(settings, uow=rig.db, object_store=rig.store, fast_tts=rig.tts)
        rig.deps.chunker_factory = conversation_deps(container, rig.engine).chunker_factory
        session = await rig.session()
        await session.text_input("tell me about your town")
        await rig.until(session, is_type("turn_completed"))
        spoken = [r.text for r in rig.tts.requests]
        whole_sentence = long_first.removeprefix("[happy] ").removesuffix(" Tell me more.")
        assert spoken[0] == (first or whole_sentence)
        assert " ".join(spoken) == long_first.removeprefix("[happy] ")
        await session.aclose()


class RecordingPause:
    """A :class:`GenerationPause` that writes what happens into a shared log."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.holds = 0

    def hold(self) -> Callable[[], None]:
        self.holds += 1
        self.log.append("hold")
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.holds -= 1
                self.log.append("release")

        return release


class LoggingSynthesizer(FakeSynthesizer):
    def __init__(self, log: list[str], **kwargs: Any) -> None:
        super().__init__(TTSMode.FAST, **kwargs)
        self.log = log

    async def synthesize(self, request: SynthesisRequest) -> InstantSynthesisStream:
        self.log.append(f"synthesize {request.text.strip()}")
        stream = await super().synthesize(request)
        produce = stream.chunks

        async def chunks() -> AsyncIterator[AudioChunk]:
            async for chunk in produce():
                self.log.append("chunk")
                yield chunk

        stream.chunks = chunks  # type: ignore[method-assign]
        return stream


async def test_the_model_is_held_while_the_voice_makes_the_first_chunk_only() -> None:
    # docs/adr/0014-voice-latency.md, "Seventh round": the first clause is synthesized with the
    # model's generation held; the hold ends at its first chunk; later clauses do not hold it.
    log: list[str] = []
    rig = Rig(token_delay_s=0.005)
    rig.deps.fast_tts = LoggingSynthesizer(log)
    pause = RecordingPause(log)
    rig.deps.generation_pause = pause
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("turn_completed"))
    first = log.index("hold")
    assert log[first + 1].startswith("synthesize ") and log[first + 2 : first + 4] == ["chunk", "release"]
    assert log.count("hold") == 1 and pause.holds == 0
    assert sum(e.startswith("synthesize ") for e in log) >= 2  # later clauses spoke without a hold
    await session.aclose()


async def test_a_failed_first_synthesis_releases_the_model() -> None:
    log: list[str] = []
    rig = Rig()
    rig.deps.fast_tts = LoggingSynthesizer(log, fail=True)
    pause = RecordingPause(log)
    rig.deps.generation_pause = pause
    session = await rig.session()
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    assert any(m["type"] == "error" and m["code"] == "TTS_FAILED" for m in messages)
    assert log[:3] == ["hold", log[1], "release"] and log[1].startswith("synthesize ")
    assert pause.holds == 0
    await session.aclose()


async def test_a_partial_transcript_lets_the_reply_engine_prepare_the_next_prompt() -> None:
    rig = Rig(replies=("[happy] Nice to meet you, Alice.",), texts=("my name is alice",))
    primed: list[tuple[uuid.UUID, str]] = []

    class Spy(BrainReplyEngine):
        async def prime(self, session_id: uuid.UUID, partial_text: str) -> None:
            primed.append((session_id, partial_text))
            if partial_text == "explode":
                raise RuntimeError("a prime that fails must not end the conversation")
            await super().prime(session_id, partial_text)

    rig.deps = replace(rig.deps, replies=Spy(rig.engine._deps))
    session = await rig.session()

    def partial(text: str) -> TranscriptEvent:
        return TranscriptEvent(
            TranscriptEventKind.PARTIAL,
            Transcription(text=text, is_final=False, confidence=0.9, language="en"),
        )

    stream = rig.recognizer.streams[0]
    stream.report(partial("explode"))
    await rig.until(session, is_type("transcription_partial"))
    for _ in range(10):
        await asyncio.sleep(0)
    stream.report(partial("my name"))
    await rig.until(session, lambda m: m["type"] == "transcription_partial" and m["text"] == "my name")
    for _ in range(10):
        await asyncio.sleep(0)
    assert primed == [(session.session_id, "explode"), (session.session_id, "my name")]
    await session.push_audio(tone(1000))  # the conversation goes on: a full turn
    await rig.until(session, is_type("turn_completed"))
    await session.aclose()


async def test_no_prompt_is_prepared_from_a_partial_while_a_reply_runs() -> None:
    rig = Rig(replies=(REPLY,), token_delay_s=0.05)
    primed: list[str] = []

    class Spy(BrainReplyEngine):
        async def prime(self, session_id: uuid.UUID, partial_text: str) -> None:
            primed.append(partial_text)

    rig.deps = replace(rig.deps, replies=Spy(rig.engine._deps))
    session = await rig.session()
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("llm_token"))
    assert session.replying
    primed.clear()  # the utterance's own partial came before its final (and was prepared from)
    rig.recognizer.streams[0].report(
        TranscriptEvent(
            TranscriptEventKind.PARTIAL, Transcription(text="over it", is_final=False, confidence=0.9)
        )
    )
    await rig.until(session, is_type("transcription_partial"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert primed == []
    await session.aclose()
