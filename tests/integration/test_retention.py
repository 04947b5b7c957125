"""Retention of stored audio (docs/security.md, "Retention") against real PostgreSQL + pgvector and
a real S3 server: conversations held through the real app and socket, then sweeps at later times.
Raw inputs are archived as Ogg/Opus after a day (still sealed, same duration), synthesized replies
go after 7 days and raw inputs after 30; the turns keep reading and say the audio expired; an old
URL answers 410; sweeps are idempotent, resume after a failure, and run in one process at a time."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest_asyncio
import soundfile as sf
from prometheus_client import REGISTRY

from avatar.application.retention import LOCK_NAME, RetentionSweeper
from avatar.bootstrap import Container, Services, build_retention
from avatar.domain.errors import DependencyError
from avatar.infrastructure.database import SqlUnitOfWorkFactory, create_engine, migrate
from avatar.infrastructure.database.locks import PostgresJobLock
from avatar.infrastructure.object_store import EncryptingObjectStore, build_object_store
from avatar.presentation.app import create_app
from avatar.settings import ObjectStoreSettings, Settings
from avatar_common.audio import decode_audio
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.auth import bearer, make_user
from tests.support.history import converse, turns_of
from tests.support.servers import S3Server


@dataclass
class Rig:
    base: str
    container: Container
    services: Services
    bucket_dir: Path
    key: str
    sid: str
    start: datetime


@pytest_asyncio.fixture
async def rig(module_database_url: str, s3_server: S3Server) -> AsyncIterator[Rig]:
    bucket = f"keep-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        _env_file=None,
        environment="test",
        object_store=ObjectStoreSettings(
            kind="s3",
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=bucket,
        ),
    )
    settings.retention.enabled = False  # the test runs each sweep itself, at chosen times
    async with contextlib.AsyncExitStack() as exits:
        engine = create_engine(module_database_url, pool_size=4)
        exits.push_async_callback(engine.dispose)
        await migrate.upgrade(engine)
        container = fake_container(
            settings,
            uow=SqlUnitOfWorkFactory(engine),
            object_store=await build_object_store(settings, exits),
            recognizer=FakeRecognizer(("keep this for a while",), utterance_ms=400, silence_rms=200.0),
            chat_model=FakeChatModel(("[happy] Kept, for now.",)),
        )
        await container.queue.start()
        app = create_app(settings, container)
        async with running_server(app) as base:
            _user, key = await make_user(container, f"keeper-{uuid.uuid4().hex[:6]}")
            sid = await converse(base, key, container, turns=2)
            start = container.clock.now()
            yield Rig(base, container, app.state.services, s3_server.root / bucket, key, sid, start)


def _sweeper(rig: Rig) -> RetentionSweeper:
    assert rig.services.retention is not None
    return rig.services.retention


def _later(rig: Rig, days: float) -> datetime:
    return rig.start + timedelta(days=days)


async def _download(rig: Rig, url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=rig.base, timeout=30) as http:
        return await http.get(url)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _stored_keys(rig: Rig) -> list[str]:
    return sorted(p.relative_to(rig.bucket_dir).as_posix() for p in rig.bucket_dir.rglob("*") if p.is_file())


async def test_audio_is_archived_then_expires_while_the_history_keeps_reading(rig: Rig) -> None:
    before = await turns_of(rig.base, rig.key, rig.sid)
    wavs = []
    for turn in before:
        response = await _download(rig, turn["transcription"]["audio_url"])
        assert response.status_code == 200 and response.content[:4] == b"RIFF"
        wavs.append(decode_audio(response.content))
    hq_url = next(a["url"] for a in before[0]["audio"] if a["mode"] == "hq")
    inputs = [k for k in _stored_keys(rig) if k.startswith("raw_inputs/")]
    assert len(inputs) == 2 and all(k.endswith(".wav") for k in inputs)
    archived_before = _metric("retention_archived_objects_total")

    # A day later: the raw inputs become Ogg/Opus, sealed like before, with the same duration.
    report = await _sweeper(rig).sweep(_later(rig, 1.5))
    assert report.archived == 2 and not report.failed and not report.deleted
    assert report.archived_bytes_after < report.archived_bytes_before
    assert _metric("retention_archived_objects_total") == archived_before + 2
    inputs = [k for k in _stored_keys(rig) if k.startswith("raw_inputs/")]
    assert len(inputs) == 2 and all(k.endswith(".opus") for k in inputs)
    for key in inputs:
        raw = (rig.bucket_dir / key).read_bytes()
        assert raw[:4] == b"AVE1" and b"OggS" not in raw  # still encrypted at rest
    after = await turns_of(rig.base, rig.key, rig.sid)
    for turn, wav in zip(after, wavs, strict=True):
        url = turn["transcription"]["audio_url"]
        assert ".opus" in url and not turn["transcription"]["audio_expired"]
        response = await _download(rig, url)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/ogg"
        with sf.SoundFile(io.BytesIO(response.content)) as f:
            assert f.format == "OGG" and f.subtype == "OPUS"
        opus = decode_audio(response.content)
        assert abs(opus.duration_s - wav.duration_s) < 0.03, (opus.duration_s, wav.duration_s)

    # A week later: the replies are gone, the turns stay and say so; an old URL answers 410.
    swept_hq = _metric("retention_swept_objects_total", kind="hq")
    report = await _sweeper(rig).sweep(_later(rig, 8))
    assert report.deleted["fast"] >= 2 and report.deleted["hq"] == 2 and report.deleted["raw_input"] == 0
    assert report.deleted_bytes["hq"] > 0 and not report.failed
    assert _metric("retention_swept_objects_total", kind="hq") == swept_hq + 2
    assert _metric("retention_last_run_timestamp_seconds") > 0
    assert not [k for k in _stored_keys(rig) if k.startswith("synthesized/")]
    week = await turns_of(rig.base, rig.key, rig.sid)
    assert [t["ai_response"] for t in week] == [t["ai_response"] for t in before]
    for turn in week:
        assert turn["audio"] and all(a["expired"] and a["url"] == "" for a in turn["audio"])
        assert turn["transcription"]["audio_url"] and not turn["transcription"]["audio_expired"]
    rig.container.clock.advance(timedelta(days=8).total_seconds())  # type: ignore[attr-defined]
    gone = await _download(rig, hq_url)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "AUDIO_EXPIRED"

    # A month later: the recordings are gone too; the words stay.
    report = await _sweeper(rig).sweep(_later(rig, 31))
    assert report.deleted["raw_input"] == 2 and not report.failed
    assert _stored_keys(rig) == []
    month = await turns_of(rig.base, rig.key, rig.sid)
    for turn, old in zip(month, before, strict=True):
        assert turn["transcription"]["audio_expired"] and turn["transcription"]["audio_url"] is None
        assert turn["transcription"]["text"] == old["transcription"]["text"]
        assert turn["user_input"] == old["user_input"]

    # Again: nothing left to do, nothing fails.
    again = await _sweeper(rig).sweep(_later(rig, 31))
    assert again.ran and not again.deleted and not again.archived and not again.failed


class _FailingDeletes:
    """The real store, except that deleting fails while ``failing`` is set (a crash mid-sweep)."""

    def __init__(self, inner: EncryptingObjectStore) -> None:
        self.inner = inner
        self.failing = True

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def delete(self, key: str) -> None:
        if self.failing:
            raise DependencyError("object store unavailable")
        await self.inner.delete(key)


async def test_a_sweep_cut_short_is_finished_by_the_next_one(rig: Rig) -> None:
    store = _FailingDeletes(rig.container.object_store)  # type: ignore[arg-type]
    failures = _metric("retention_failures_total", kind="archive")
    broken = build_retention(rig.container, store)  # type: ignore[arg-type]
    # Archiving wrote the Opus objects and re-pointed the rows, then could not delete the WAVs.
    report = await broken.sweep(_later(rig, 2))
    assert len(report.failed) == 2 and report.archived == 0
    assert _metric("retention_failures_total", kind="archive") == failures + 2
    keys = [k for k in _stored_keys(rig) if k.startswith("raw_inputs/")]
    assert sum(k.endswith(".wav") for k in keys) == 2 and sum(k.endswith(".opus") for k in keys) == 2
    # The history already plays the Opus copies.
    for turn in await turns_of(rig.base, rig.key, rig.sid):
        assert (await _download(rig, turn["transcription"]["audio_url"])).status_code == 200

    # Deleting replies: the rows say "expired" first, the objects stay until a sweep can delete them.
    report = await broken.sweep(_later(rig, 8))
    assert report.failed and not report.deleted["hq"]
    assert [k for k in _stored_keys(rig) if k.startswith("synthesized/hq/")]

    store.failing = False
    report = await broken.sweep(_later(rig, 8))
    assert not report.failed and report.archived == 2 and report.deleted["hq"] == 2
    keys = [k for k in _stored_keys(rig) if k.startswith("raw_inputs/")]
    assert len(keys) == 2 and all(k.endswith(".opus") for k in keys)
    assert not [k for k in _stored_keys(rig) if k.startswith("synthesized/")]
    for turn in await turns_of(rig.base, rig.key, rig.sid):
        assert (await _download(rig, turn["transcription"]["audio_url"])).status_code == 200
        assert all(a["expired"] for a in turn["audio"])


async def test_one_process_sweeps_at_a_time(rig: Rig, module_database_url: str) -> None:
    # Another replica: its own engine (own connections) holding the advisory lock.
    other = create_engine(module_database_url, pool_size=1)
    try:
        async with PostgresJobLock(other).hold(LOCK_NAME) as taken:
            assert taken
            skipped = await _sweeper(rig).sweep(_later(rig, 40))
            assert not skipped.ran and not skipped.deleted
            assert len(_stored_keys(rig)) > 0
            async with PostgresJobLock(other).hold(LOCK_NAME) as again:
                assert not again  # not re-entrant across connections either
        report = await _sweeper(rig).sweep(_later(rig, 40))
        assert report.ran and report.deleted["raw_input"] == 2
        # Released after the sweep: another replica can take it again.
        async with PostgresJobLock(other).hold(LOCK_NAME) as free:
            assert free
    finally:
        await other.dispose()


async def test_the_turn_listing_refuses_strangers_as_before(rig: Rig) -> None:
    _other, stranger = await make_user(rig.container, f"stranger-{uuid.uuid4().hex[:6]}")
    async with httpx.AsyncClient(base_url=rig.base, headers=bearer(stranger), timeout=30) as http:
        response = await http.get(f"/api/v1/sessions/{rig.sid}/turns")
    assert response.status_code == 404
