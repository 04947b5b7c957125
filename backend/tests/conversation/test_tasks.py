"""The typed queue tasks: each round-trips through its JSON payload, a malformed payload is refused
with a clear error, and the handlers drop such a task loudly instead of failing on it again."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from avatar.application.conversation import make_hq_handler
from avatar.application.prosody import ProsodyAnalysisHandler
from avatar.application.tasks import HQ_TOPIC, PROSODY_TOPIC, HQTask, ProsodyTask, enqueue
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import TTSMode
from tests.fakes import (
    FakeClock,
    FakeDatabase,
    FakeNotifier,
    FakeObjectStore,
    FakeProsodyAnalyzer,
    FakeSynthesizer,
    FakeTaskQueue,
)

SID, TID, TRID, PID = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_each_task_round_trips_through_its_payload() -> None:
    prosody = ProsodyTask(
        SID, TRID, "raw_inputs/a.wav", 16000, turn_id=TID, audio_url="s3://b/raw_inputs/a.wav"
    )
    hq = HQTask(SID, TID, "Hello there.", voice="af_heart", language="en", voice_profile_id=PID)
    for task in (prosody, hq, HQTask(SID, TID, "Hi.")):
        assert type(task).from_payload(task.to_payload()) == task


async def test_enqueue_publishes_on_the_tasks_own_topic() -> None:
    queue = FakeTaskQueue()
    await enqueue(queue, HQTask(SID, TID, "Hi."))
    await enqueue(queue, ProsodyTask(SID, TRID, "raw_inputs/a.wav"))
    assert [topic for topic, _ in queue.published] == [HQ_TOPIC, PROSODY_TOPIC]
    assert queue.published[0][1]["turn_id"] == str(TID)


def test_an_s3_url_stands_in_for_a_missing_audio_key() -> None:
    task = ProsodyTask.from_payload(
        {"session_id": str(SID), "transcription_id": str(TRID), "audio_url": "s3://bucket/raw_inputs/b.wav"}
    )
    assert task.audio_key == "raw_inputs/b.wav" and task.sample_rate == 16000


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"transcription_id": str(TRID), "audio_key": "k"}, "needs session_id"),
        ({"session_id": "nope", "transcription_id": str(TRID), "audio_key": "k"}, "invalid session_id"),
        ({"session_id": str(SID), "transcription_id": str(TRID)}, "needs audio_key or an s3:// audio_url"),
        ({"session_id": str(SID), "transcription_id": str(TRID), "audio_url": "file:///x"}, "audio_key"),
        (
            {"session_id": str(SID), "transcription_id": str(TRID), "audio_key": "k", "sample_rate": "x"},
            "invalid sample_rate",
        ),
        (
            {"session_id": str(SID), "transcription_id": str(TRID), "audio_key": "k", "sample_rate": 0},
            "sample_rate must be positive",
        ),
        ({"session_id": str(SID), "transcription_id": str(TRID), "audio_key": 7}, "invalid audio_key"),
    ],
)
def test_a_malformed_prosody_payload_is_refused_clearly(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ProsodyTask.from_payload(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"turn_id": str(TID), "text": "hi"}, "needs session_id"),
        ({"session_id": str(SID), "text": "hi"}, "needs turn_id"),
        ({"session_id": str(SID), "turn_id": "x", "text": "hi"}, "invalid turn_id"),
        ({"session_id": str(SID), "turn_id": str(TID), "text": 5}, "invalid text"),
        ({"session_id": str(SID), "turn_id": str(TID), "voice_profile_id": "p"}, "invalid voice_profile_id"),
    ],
)
def test_a_malformed_hq_payload_is_refused_clearly(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        HQTask.from_payload(payload)


async def test_the_handlers_drop_a_malformed_task_loudly(caplog: pytest.LogCaptureFixture) -> None:
    db, store, notifier, clock = FakeDatabase(), FakeObjectStore(), FakeNotifier(), FakeClock()
    hq_tts = FakeSynthesizer(TTSMode.HQ)
    hq = make_hq_handler(hq_tts=hq_tts, object_store=store, uow=db, notifier=notifier, clock=clock)
    prosody = ProsodyAnalysisHandler(FakeProsodyAnalyzer(), db, store, notifier, clock)
    with caplog.at_level(logging.ERROR):
        await hq({"session_id": str(SID), "turn_id": "not-a-uuid", "text": "Hello."})
        await prosody({"session_id": str(SID), "audio_key": "k"})
    assert hq_tts.requests == [] and notifier.sent == [] and db.commits == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"dropping HQ task: a {HQ_TOPIC} task has an invalid turn_id: 'not-a-uuid'",
        f"dropping prosody task: a {PROSODY_TOPIC} task needs transcription_id",
    ]
