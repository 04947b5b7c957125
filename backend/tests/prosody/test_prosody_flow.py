"""Queue -> analysis -> database -> client push, the REST endpoints and the report, with fakes of the
storage ports around the real analyzer (and one run against the real PostgreSQL).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import httpx
import numpy as np
import pytest

from avatar.application.ports.prosody import ProsodyAnalyzer
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.prosody import (
    BASELINE_WINDOW,
    MIN_BASELINE_UTTERANCES,
    ProsodyAnalysisHandler,
    build_report,
)
from avatar.application.tasks import PROSODY_TOPIC, ProsodyTask
from avatar.bootstrap import Container
from avatar.domain.models import ConversationTurn, ProsodyScore, Session, Transcription
from avatar.infrastructure.prosody import EmbeddedProsodyAnalyzer, build_prosody_analyzer
from avatar.presentation.app import create_app
from avatar.settings import Settings
from avatar_common.audio import encode_wav
from avatar_prosody.analyzer import ProsodyEngine
from avatar_prosody.synth import synthetic_voice
from tests.fakes import (
    FakeClock,
    FakeDatabase,
    FakeNotifier,
    FakeObjectStore,
    FakeProsodyAnalyzer,
    FakeTaskQueue,
    fake_container,
)
from tests.support.audio import SpeechClip
from tests.support.auth import bearer, make_user, seed_owner

RATE = 16000


@pytest.fixture(scope="module")
async def analyzer() -> AsyncIterator[EmbeddedProsodyAnalyzer]:
    engine = ProsodyEngine(2, executor="thread")
    try:
        yield EmbeddedProsodyAnalyzer(engine)
    finally:
        await engine.aclose()


def factory(db: object) -> UnitOfWorkFactory:
    """``db`` as the port type.

    The ``UnitOfWork`` protocol declares its repositories as plain (mutable, so invariant)
    attributes, which the fakes' and the SQL adapter's concrete repository types do not match
    under mypy although they satisfy it at run time.
    """
    return cast(UnitOfWorkFactory, db)


async def seed_utterance(
    uow: UnitOfWorkFactory, session_id: uuid.UUID, number: int, owner_id: uuid.UUID | None = None
) -> uuid.UUID:
    """A session (if new), a turn and its final transcription; returns the transcription id."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    async with uow() as tx:
        if await tx.sessions.get(session_id) is None:
            await tx.sessions.add(
                Session(session_id=session_id, start_time=now, created_at=now, owner_id=owner_id)
            )
        turn = ConversationTurn(
            turn_id=uuid.uuid4(),
            session_id=session_id,
            turn_number=number,
            user_input=f"utterance {number}",
            created_at=now,
        )
        await tx.turns.add(turn)
        transcription = Transcription(text=f"utterance {number}", is_final=True, confidence=0.9)
        await tx.transcriptions.add(turn.turn_id, transcription, None, [])
        await tx.commit()
    return transcription.transcription_id


async def stored(uow: UnitOfWorkFactory, session_id: uuid.UUID) -> list[ProsodyScore]:
    async with uow() as tx:
        return await tx.prosody.list_for_session(session_id)


@contextlib.asynccontextmanager
async def running_app(container: Container, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, with a client signed in with ``key`` (a new user's when not given)."""
    app = create_app(container.settings, container)
    key = key or (await make_user(container))[1]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://avatar", headers=bearer(key)
        ) as client,
    ):
        yield client


def _task(session_id: uuid.UUID, transcription_id: uuid.UUID, key: str) -> dict[str, object]:
    return {
        "session_id": str(session_id),
        "turn_id": str(uuid.uuid4()),
        "transcription_id": str(transcription_id),
        "audio_key": key,
        "sample_rate": RATE,
    }


async def test_queue_to_database_to_client_push_and_report(
    analyzer: EmbeddedProsodyAnalyzer, librivox: list[SpeechClip]
) -> None:
    db, store, queue, notifier = FakeDatabase(), FakeObjectStore(), FakeTaskQueue(), FakeNotifier()
    # The notifier stands in for the session manager's, to record the pushes.
    container = fake_container(prosody=analyzer, uow=db, object_store=store, queue=queue, notifier=notifier)
    session_id = uuid.uuid4()
    clips = librivox[:3]
    user, key = await make_user(container)
    async with running_app(container, key) as client:
        ids = []
        for number, clip in enumerate(clips, start=1):
            tid = await seed_utterance(factory(db), session_id, number, user.user_id)
            key = f"raw_inputs/2026/01/01/{session_id}_{number}.wav"
            await store.put(key, encode_wav(clip.samples, clip.sample_rate), "audio/wav")
            # One at a time, as a person speaks: each utterance's baseline holds the earlier ones.
            await queue.publish(PROSODY_TOPIC, _task(session_id, tid, key))
            await queue.drain()
            ids.append(tid)
        assert queue.errors == []

        rows = await stored(factory(db), session_id)
        assert [r.transcription_id for r in rows] == ids
        assert all(r.reliable for r in rows)
        assert [r.features["baseline_utterances"] for r in rows] == [0.0, 0.0, float(MIN_BASELINE_UTTERANCES)]
        for row in rows:
            assert 60.0 <= float(row.features["f0_mean_hz"] or 0) <= 400.0
        assert [m for _, m in notifier.sent] == [
            {
                "type": "prosody_analysis",
                "transcription_id": str(r.transcription_id),
                "scores": {"confidence": r.confidence, "stability": r.stability, "affability": r.affability},
                "reliable": True,
                "reason": None,
            }
            for r in rows
        ]
        assert {sid for sid, _ in notifier.sent} == {session_id}

        one = await client.get(f"/api/v1/prosody/{ids[0]}")
        assert one.status_code == 200
        body = one.json()
        assert body["scores"] == notifier.sent[0][1]["scores"]
        assert body["reliable"] is True and body["features"]["f0_mean_hz"] == rows[0].features["f0_mean_hz"]

        # Another user's client gets 404 for both, exactly as for ids that do not exist.
        _other, other_key = await make_user(container, "someone-else")
        for path in (f"/api/v1/prosody/{ids[0]}", f"/api/v1/sessions/{session_id}/prosody"):
            foreign = await client.get(path, headers=bearer(other_key))
            assert foreign.status_code == 404, path
            assert (await client.get(path, headers={"Authorization": ""})).status_code == 401

        report = (await client.get(f"/api/v1/sessions/{session_id}/prosody")).json()
        assert report["utterances"] == 3 and report["reliable_utterances"] == 3
        assert [p["transcription_id"] for p in report["points"]] == [str(i) for i in ids]
        for name in ("confidence", "stability", "affability"):
            trend = report["trends"][name]
            values = [p["scores"][name] for p in report["points"]]
            assert trend["first"] == values[0] and trend["last"] == values[-1]
            assert trend["direction"] in ("rising", "falling", "steady")


async def test_bad_audio_is_stored_unreliable_with_its_reason(analyzer: EmbeddedProsodyAnalyzer) -> None:
    db, store, notifier = FakeDatabase(), FakeObjectStore(), FakeNotifier()
    handler = ProsodyAnalysisHandler(analyzer, factory(db), store, notifier, FakeClock())
    session_id = uuid.uuid4()
    rng = np.random.default_rng(4)
    cases = {
        "too_short": encode_wav(synthetic_voice(0.3), RATE),
        "silent": encode_wav(np.zeros(RATE * 2, dtype=np.float32), RATE),
        "clipped": encode_wav(np.clip(synthetic_voice(2.0, level_dbfs=-3) * 4, -1, 1), RATE),
        "non_speech": encode_wav((0.1 * rng.standard_normal(RATE * 2)).astype(np.float32), RATE),
        "invalid_audio": b"RIFF" + rng.bytes(3001),  # garbage that claims to be a WAV
        "audio_missing": None,
    }
    for number, (reason, data) in enumerate(cases.items(), start=1):
        tid = await seed_utterance(factory(db), session_id, number)
        key = f"raw_inputs/{reason}.wav"
        if data is not None:
            await store.put(key, data)
        await handler(_task(session_id, tid, key))
        async with db() as tx:
            score = await tx.prosody.get_for_transcription(tid)
        assert score is not None
        assert (score.reliable, score.reason) == (False, reason)
        assert notifier.sent[-1][1]["reliable"] is False and notifier.sent[-1][1]["reason"] == reason
    # Raw PCM (not WAV) of garbage bytes is analyzed as sound and found not to be speech.
    tid = await seed_utterance(factory(db), session_id, 99)
    await store.put("raw_inputs/garbage.pcm", rng.bytes(RATE * 4))
    score = await handler.handle(ProsodyTask(session_id, tid, "raw_inputs/garbage.pcm", RATE))
    assert (score.reliable, score.reason) == (False, "non_speech")
    # Unreliable utterances never feed the baseline or the trend.
    report = build_report(session_id, await stored(factory(db), session_id))
    assert report.reliable_utterances == 0
    assert report.trends["confidence"].direction == "insufficient"


async def test_malformed_tasks_are_dropped_and_repeats_are_idempotent(
    analyzer: EmbeddedProsodyAnalyzer,
) -> None:
    db, store, notifier = FakeDatabase(), FakeObjectStore(), FakeNotifier()
    handler = ProsodyAnalysisHandler(analyzer, factory(db), store, notifier, FakeClock())
    for payload in (
        {},
        {"session_id": "x", "transcription_id": str(uuid.uuid4()), "audio_key": "k"},
        {"session_id": str(uuid.uuid4()), "transcription_id": str(uuid.uuid4())},
        {
            "session_id": str(uuid.uuid4()),
            "transcription_id": str(uuid.uuid4()),
            "audio_url": "file:///tmp/x.wav",
        },
    ):
        await handler(payload)
    assert notifier.sent == [] and db.commits == 0

    session_id = uuid.uuid4()
    tid = await seed_utterance(factory(db), session_id, 1)
    await store.put("raw_inputs/a.wav", encode_wav(synthetic_voice(2.0), RATE))
    # An s3:// URL works in place of the key.
    task = {**_task(session_id, tid, ""), "audio_url": "s3://avatar-audio/raw_inputs/a.wav"}
    await handler(task)
    await handler(task)
    assert len(await stored(factory(db), session_id)) == 1
    assert len(notifier.sent) == 2 and notifier.sent[0] == notifier.sent[1]


async def test_rest_errors(analyzer: EmbeddedProsodyAnalyzer) -> None:
    container = fake_container(prosody=analyzer)
    async with running_app(container) as client:
        for path, status, code in (
            (f"/api/v1/prosody/{uuid.uuid4()}", 404, "PROSODY_NOT_FOUND"),
            ("/api/v1/prosody/not-a-uuid", 422, "INVALID_INPUT"),
            (f"/api/v1/sessions/{uuid.uuid4()}/prosody", 404, "SESSION_NOT_FOUND"),
            ("/api/v1/sessions/nope/prosody", 422, "INVALID_INPUT"),
        ):
            r = await client.get(path)
            assert r.status_code == status, (path, r.text)
            assert r.json()["error"]["code"] == code and r.json()["error"]["trace_id"]


async def test_disabled_prosody_subscribes_nothing(analyzer: EmbeddedProsodyAnalyzer) -> None:
    settings = Settings()
    settings.prosody.enabled = False
    queue = FakeTaskQueue()
    async with running_app(fake_container(settings, prosody=analyzer, queue=queue)):
        assert PROSODY_TOPIC not in queue.handlers
    settings.prosody.enabled = True
    settings.prosody.workers = 3
    queue = FakeTaskQueue()
    async with running_app(fake_container(settings, prosody=analyzer, queue=queue)):
        assert len(queue.handlers[PROSODY_TOPIC]) == 1


def _score(minutes: int, confidence: float, reliable: bool = True) -> ProsodyScore:
    return ProsodyScore(
        uuid.uuid4(),
        uuid.uuid4(),
        confidence,
        50.0,
        50.0,
        {"hnr_db": 10.0 + minutes},
        datetime(2026, 1, 1, 0, minutes, tzinfo=UTC),
        reliable,
        None if reliable else "silent",
    )


def test_report_trend_over_turns() -> None:
    session_id = uuid.uuid4()
    scores = [_score(3, 70.0), _score(1, 50.0), _score(2, 10.0, reliable=False), _score(4, 80.0)]
    report = build_report(session_id, scores)
    assert [p.scores["confidence"] for p in report.points] == [50.0, 10.0, 70.0, 80.0]
    trend = report.trends["confidence"]
    assert (trend.first, trend.last, trend.mean) == (50.0, 80.0, 66.7)
    assert trend.direction == "rising"
    assert trend.slope_per_utterance is not None and trend.slope_per_utterance > 0
    assert report.trends["stability"].direction == "steady"
    falling = build_report(session_id, [_score(1, 80.0), _score(2, 60.0)])
    assert falling.trends["confidence"].direction == "falling"


async def test_embedded_worker_processes_through_the_port(librivox: list[SpeechClip]) -> None:
    settings = Settings()
    settings.prosody.workers = 1
    async with contextlib.AsyncExitStack() as stack:
        port: ProsodyAnalyzer = await build_prosody_analyzer(settings, stack)
        clip = librivox[2]
        result = await port.analyze(clip.pcm, clip.sample_rate)
        assert result.reliable and 60.0 <= float(result.features["f0_mean_hz"] or 0) <= 400.0
        relative = await port.analyze(
            clip.pcm,
            clip.sample_rate,
            baseline={
                k: float(v)
                for k, v in result.features.items()
                if isinstance(v, float) and not k.startswith("egemaps.")
            },
        )
        # Against its own features as the baseline every z-score is 0: all three scores are 50.
        assert (relative.confidence, relative.stability, relative.affability) == (50.0, 50.0, 50.0)
        health = await port.health()
        assert health.ok and health.extra["loaded"] is True
        # In-process, the analyses are counted where the orchestrator exports them.
        registry = getattr(port, "metrics_registry", None)
        assert registry is not None
        assert registry.get_sample_value("prosody_analyses_total", {"outcome": "reliable"}) == 2.0
        assert registry.get_sample_value("prosody_analysis_seconds_count") == 2.0


async def test_real_database(module_database_url: str, analyzer: EmbeddedProsodyAnalyzer) -> None:
    from avatar.infrastructure.database import build_unit_of_work_factory

    settings = Settings()
    settings.database.placement = settings.database.placement.REMOTE
    settings.database.url = type(settings.database.url)(module_database_url)
    async with contextlib.AsyncExitStack() as stack:
        uow = factory(await build_unit_of_work_factory(settings, stack))
        owner = await seed_owner(uow)
        store, notifier, clock = FakeObjectStore(), FakeNotifier(), FakeClock()
        handler = ProsodyAnalysisHandler(analyzer, uow, store, notifier, clock)
        session_id = uuid.uuid4()
        for number, level in enumerate((-20, -20, -12, -28), start=1):
            tid = await seed_utterance(uow, session_id, number, owner)
            key = f"raw_inputs/{number}.wav"
            await store.put(key, encode_wav(synthetic_voice(2.0, level_dbfs=level, seed=number), RATE))
            await handler(_task(session_id, tid, key))
            clock.advance(10)
        async with uow() as tx:
            rows = await tx.prosody.list_for_session(session_id)
            again = await tx.prosody.get_for_transcription(rows[2].transcription_id)
        assert again == rows[2]
        assert len(rows) == 4 and all(r.reliable for r in rows)
        assert [r.features["baseline_utterances"] for r in rows] == [0.0, 0.0, 2.0, 3.0]
        # Against the speaker's own usual level: louder reads as confident, quieter as less so.
        assert rows[2].confidence > 50.0 > rows[3].confidence
        assert len(notifier.sent) == 4


async def test_a_long_session_reads_only_the_baseline_window() -> None:
    # 30 earlier scores, every fifth unreliable: the baseline is the mean of the latest 20 reliable
    # ones, the analysis sees exactly those, and the stored row says how many formed it.
    db, store, notifier, analyzer = FakeDatabase(), FakeObjectStore(), FakeNotifier(), FakeProsodyAnalyzer()
    uow = factory(db)
    session_id = uuid.uuid4()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    reliable_levels: list[float] = []
    for number in range(1, 31):
        tid = await seed_utterance(uow, session_id, number)
        reliable = number % 5 != 0
        if reliable:
            reliable_levels.append(float(number))
        async with uow() as tx:
            await tx.prosody.add(
                ProsodyScore(
                    uuid.uuid4(), tid, 50.0, 50.0, 50.0, {"rms_dbfs": float(number)}, now, reliable=reliable
                )
            )
            await tx.commit()
    tid = await seed_utterance(uow, session_id, 31)
    await store.put("raw_inputs/31.pcm", bytes(RATE * 2))
    handler = ProsodyAnalysisHandler(analyzer, uow, store, notifier, FakeClock())
    await handler(_task(session_id, tid, "raw_inputs/31.pcm"))
    [(_, _, baseline)] = analyzer.calls
    window = reliable_levels[-BASELINE_WINDOW:]
    assert baseline is not None
    assert baseline["rms_dbfs"] == pytest.approx(sum(window) / len(window))
    async with uow() as tx:
        score = await tx.prosody.get_for_transcription(tid)
    assert score is not None
    assert score.features["baseline_utterances"] == float(BASELINE_WINDOW)
