"""The retention sweep as a scheduled job of the app (docs/security.md, "Retention"), on the
in-memory storage: it runs by itself in the process that serves (and in `avatar worker`, which goes
through the same ``running``), one sweep at a time; keys carry their age; settings are checked.
The sweep against real PostgreSQL and S3 is in tests/integration/test_retention.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import REGISTRY

from avatar.application.retention import LOCK_NAME
from avatar.bootstrap import build_retention, running
from avatar.domain.errors import DomainError
from avatar.domain.models import ConversationTurn, Session, SynthesizedAudio, Transcription, TTSMode, new_id
from avatar.domain.storage_keys import archived_key, key_time, raw_input_key, synthesized_key
from avatar.infrastructure.retention import LocalJobLock, OpusArchiver
from avatar.settings import RetentionSettings, Settings
from avatar_common.audio import decode_audio, encode_wav, pcm16_to_float
from tests.fakes import FakeClock, FakeDatabase, FakeObjectStore, fake_container
from tests.support.audio import SpeechClip

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_keys_carry_their_time_and_archives_their_own_name() -> None:
    sid, tid = uuid.uuid4(), uuid.uuid4()
    key = raw_input_key(sid, tid, NOW)
    assert key_time(key) == NOW
    assert key_time(synthesized_key(tid, TTSMode.HQ, NOW)) == NOW
    assert key_time("voice_profiles/x/original.wav") is None
    assert archived_key(key) == key[: -len(".wav")] + ".opus"
    with pytest.raises(DomainError):
        archived_key("raw_inputs/no-extension")


def test_archiving_must_come_before_deletion() -> None:
    with pytest.raises(ValueError, match="archive_after_days"):
        RetentionSettings(raw_input_days=1, archive_after_days=2)
    assert RetentionSettings(raw_input_days=1, archive_after_days=2, archive=False).raw_input_days == 1
    defaults = RetentionSettings()
    assert (defaults.raw_input_days, defaults.synthesized_days, defaults.archive_after_days) == (30, 7, 1)


async def test_the_lock_lets_one_sweep_run_at_a_time() -> None:
    lock = LocalJobLock()
    async with lock.hold(LOCK_NAME) as first:
        async with lock.hold(LOCK_NAME) as second:
            assert first and not second
    async with lock.hold(LOCK_NAME) as again:
        assert again


async def _seed(db: FakeDatabase, store: FakeObjectStore, at: datetime) -> tuple[uuid.UUID, str, str]:
    """One turn at ``at`` with its input audio (a 1.2 s tone) and its fast reply."""
    session = Session.start(at, {}, owner_id=new_id())
    turn = ConversationTurn(turn_id=new_id(), session_id=session.session_id, turn_number=1, user_input="hi")
    tr = Transcription(text="hi", is_final=True, confidence=0.9, transcription_id=new_id())
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(19200) / 16000)).astype(np.float32)
    raw_key = raw_input_key(session.session_id, turn.turn_id, at)
    raw_url = await store.put(raw_key, encode_wav(tone, 16000), "audio/wav")
    fast_key = synthesized_key(turn.turn_id, TTSMode.FAST, at)
    fast_url = await store.put(fast_key, b"RIFF....fast", "audio/wav")
    async with db() as tx:
        await tx.sessions.add(session)
        await tx.turns.add(turn)
        await tx.transcriptions.add(turn.turn_id, tr, raw_url, [])
        await tx.synthesized.add(
            SynthesizedAudio(
                audio_id=new_id(),
                turn_id=turn.turn_id,
                mode=TTSMode.FAST,
                audio_url=fast_url,
                duration_sec=0.5,
                synthesis_time_ms=10.0,
            )
        )
        await tx.commit()
    return tr.transcription_id, raw_key, fast_key


async def test_the_app_sweeps_on_its_own_schedule() -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.retention.first_run_delay_s = 0.0
    settings.retention.interval_s = 0.05
    db, store = FakeDatabase(), FakeObjectStore()
    clock = FakeClock(NOW)
    old_tr, old_raw, old_fast = await _seed(db, store, NOW - timedelta(days=10))
    new_tr, new_raw, _new_fast = await _seed(db, store, NOW - timedelta(days=2))
    swept = REGISTRY.get_sample_value("retention_swept_objects_total", {"kind": "fast"}) or 0.0
    container = fake_container(settings, uow=db, object_store=store, clock=clock)
    async with running(settings, container):
        for _ in range(600):  # the job runs by itself; give the loaded machine time
            keys = set(store.objects)
            if old_fast not in keys and {old_raw, new_raw}.isdisjoint(keys):
                break
            await asyncio.sleep(0.05)
    keys = set(store.objects)
    # Ten days old: the reply is gone; the input (kept 30 days) is archived as Opus.
    assert old_fast not in keys and old_raw not in keys and archived_key(old_raw) in keys
    assert new_raw not in keys and archived_key(new_raw) in keys
    opus = decode_audio(store.objects[archived_key(new_raw)][0])
    assert abs(opus.duration_s - 1.2) < 0.03
    assert (REGISTRY.get_sample_value("retention_swept_objects_total", {"kind": "fast"}) or 0.0) == swept + 1
    async with db() as tx:
        assert await tx.transcriptions.audio_url(new_tr) == f"s3://{store.bucket}/{archived_key(new_raw)}"
        assert await tx.transcriptions.audio_expired_at(old_tr) is None
    # Forty days on, everything of both turns is gone and the rows say when.
    report = await build_retention(container).sweep(NOW + timedelta(days=40))
    assert report.deleted["raw_input"] == 2 and not report.failed
    async with db() as tx:
        assert await tx.transcriptions.audio_expired_at(old_tr) == NOW + timedelta(days=40)


async def test_the_opus_archive_of_real_speech_is_smaller_and_as_long(librivox: list[SpeechClip]) -> None:
    archiver = OpusArchiver(24000)
    for clip in librivox[:2]:
        wav = encode_wav(pcm16_to_float(clip.pcm), 16000)
        archived = await archiver.to_opus(wav)
        assert archived.data[:4] == b"OggS" and len(archived.data) * 5 < len(wav)
        decoded = decode_audio(archived.data)
        assert abs(decoded.duration_s - len(clip.pcm) / 2 / 16000) < 0.03
        assert abs(archived.duration_s - decoded.duration_s) < 0.03
    with pytest.raises(ValueError, match="cannot be decoded"):
        await archiver.to_opus(b"not audio at all")
