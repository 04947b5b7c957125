"""Domain invariants and pure rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from avatar.domain.errors import DomainError
from avatar.domain.models import (
    AudioChunk,
    ConversationTurn,
    Emotion,
    ProsodyScore,
    Session,
    SessionStatus,
    Transcription,
    TTSMode,
    TTSTask,
    VoiceProfile,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_audio_chunk_duration_and_validation() -> None:
    chunk = AudioChunk(pcm=b"\x00\x00" * 1600, sample_rate=16000)
    assert chunk.num_samples == 1600
    assert chunk.duration_ms == pytest.approx(100.0)
    with pytest.raises(DomainError):
        AudioChunk(pcm=b"\x00\x00\x00", sample_rate=16000)
    with pytest.raises(DomainError):
        AudioChunk(pcm=b"", sample_rate=0)


def test_session_lifecycle_ends_once() -> None:
    session = Session.start(NOW, {"client": "web"})
    assert session.is_active and session.created_at == NOW
    later = datetime(2026, 5, 1, 12, 5, tzinfo=UTC)
    session.end(later)
    assert session.status is SessionStatus.ENDED and session.end_time == later
    session.end(datetime(2026, 5, 1, 13, 0, tzinfo=UTC), error=True)
    assert session.status is SessionStatus.ENDED and session.end_time == later


def test_turn_numbers_start_at_one_and_complete_records_reply() -> None:
    with pytest.raises(DomainError):
        ConversationTurn(turn_id=uuid.uuid4(), session_id=uuid.uuid4(), turn_number=0, user_input="hi")
    turn = ConversationTurn(turn_id=uuid.uuid4(), session_id=uuid.uuid4(), turn_number=1, user_input="hi")
    turn.complete("Hello", Emotion.HAPPY, interrupted=True)
    assert (turn.ai_response, turn.emotion, turn.interrupted) == ("Hello", Emotion.HAPPY, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("happy", Emotion.HAPPY),
        (" [Excited] ", Emotion.EXCITED),
        ("JOY", Emotion.HAPPY),
        ("surprise", Emotion.SURPRISED),
        ("", Emotion.NEUTRAL),
        (None, Emotion.NEUTRAL),
        ("bored", Emotion.NEUTRAL),
    ],
)
def test_emotion_parse_is_lenient(raw: str | None, expected: Emotion) -> None:
    assert Emotion.parse(raw) is expected


def test_emotion_parse_uses_given_default() -> None:
    assert Emotion.parse("???", Emotion.SAD) is Emotion.SAD


def test_transcription_confidence_range() -> None:
    Transcription(text="ok", is_final=True, confidence=1.0)
    with pytest.raises(DomainError):
        Transcription(text="ok", is_final=True, confidence=1.5)


def test_prosody_scores_are_bounded() -> None:
    base = {"transcription_id": uuid.uuid4(), "features": {}, "analyzed_at": NOW}
    ProsodyScore(score_id=uuid.uuid4(), confidence=0, stability=100, affability=50, **base)  # type: ignore[arg-type]
    with pytest.raises(DomainError, match="stability"):
        ProsodyScore(score_id=uuid.uuid4(), confidence=0, stability=101, affability=50, **base)  # type: ignore[arg-type]


def test_voice_profile_needs_256_dims_and_a_name() -> None:
    emb = tuple([0.0] * 256)
    VoiceProfile(uuid.uuid4(), "Mina", "s3://b/k", emb, 6.0, 16000)
    with pytest.raises(DomainError):
        VoiceProfile(uuid.uuid4(), "Mina", "s3://b/k", emb[:10], 6.0, 16000)
    with pytest.raises(DomainError):
        VoiceProfile(uuid.uuid4(), "  ", "s3://b/k", emb, 6.0, 16000)


def test_tts_task_as_hq_keeps_text_and_gets_new_id() -> None:
    task = TTSTask(uuid.uuid4(), uuid.uuid4(), "Hello.", TTSMode.FAST, voice="joe")
    hq = task.as_hq()
    assert hq.mode is TTSMode.HQ and hq.text == task.text and hq.task_id != task.task_id


def test_wav_round_trip_and_corrupt_audio() -> None:
    from avatar.domain.errors import InvalidInputError
    from avatar.domain.wav import pcm16_wav, wav_pcm16

    pcm = bytes(range(256)) * 4
    data = pcm16_wav(pcm, 22050)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert wav_pcm16(data) == (pcm, 22050)
    with pytest.raises(InvalidInputError) as info:
        wav_pcm16(b"RIFF\x00\x00junk")
    assert info.value.code == "CORRUPT_AUDIO"
