"""The typed wire models shared by the HTTP and WebSocket routes: parsing and shapes. No model."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from avatar_asr.engine import Recognition, Segment, Word
from avatar_asr.errors import ASRError
from avatar_asr.stream import EventKind, StreamEvent
from avatar_asr.wire import (
    AudioMessage,
    ConfigMessage,
    EndInputMessage,
    ErrorBody,
    FlushMessage,
    dump,
    event_message,
    parse_client_message,
)


def test_client_messages_parse_into_their_types() -> None:
    assert parse_client_message('{"type": "end"}') == EndInputMessage(type="end")
    assert parse_client_message('{"type": "flush"}') == FlushMessage(type="flush")
    config = parse_client_message('{"type": "config", "sample_rate": "44100"}')
    assert config == ConfigMessage(type="config", sample_rate=44100, channels=None)
    audio = parse_client_message(
        json.dumps({"type": "audio", "data": base64.b64encode(b"\x01\x00").decode()})
    )
    assert isinstance(audio, AudioMessage) and audio.pcm() == b"\x01\x00"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "INVALID_JSON"),
        ("[1, 2]", "INVALID_JSON"),
        ('{"type": "dance"}', "UNKNOWN_MESSAGE_TYPE"),
        ("{}", "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "config", "sample_rate": "fast"}', "INVALID_MESSAGE"),
        ('{"type": "config", "channels": 1.5}', "INVALID_MESSAGE"),
        ('{"type": "audio", "data": 12}', "INVALID_MESSAGE"),
    ],
)
def test_bad_client_messages_get_clear_codes(text: str, code: str) -> None:
    with pytest.raises(ASRError) as refused:
        parse_client_message(text)
    assert refused.value.code == code and refused.value.message


def test_audio_that_is_not_base64_is_invalid_audio() -> None:
    message = parse_client_message('{"type": "audio", "data": "%%%"}')
    assert isinstance(message, AudioMessage)
    with pytest.raises(ASRError) as refused:
        message.pcm()
    assert refused.value.code == "INVALID_AUDIO"


def test_errors_have_openais_shape() -> None:
    body = ErrorBody.of("INVALID_AUDIO", "the file is not audio").model_dump()
    assert set(body["error"]) == {"message", "type", "param", "code", "trace_id"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None
    assert ErrorBody.of("BUSY", "busy", status=503).error.type == "server_error"


def _final_event() -> StreamEvent:
    rec = Recognition(
        text="Hello there.",
        confidence=0.91234,
        language="en",
        language_probability=1.0,
        segments=(Segment("Hello there.", 0.1, 0.9, -0.1, 0.01),),
        words=(Word("Hello", 0.1, 0.4, 0.95), Word("there.", 0.5, 0.9, 0.9)),
        duration=1.0,
        low_confidence=False,
    )
    return StreamEvent(
        EventKind.FINAL,
        rec,
        stream_time_ms=1500.04,
        audio_start_ms=200.0,
        audio_end_ms=1200.0,
        latency_ms=300.0,
        since_speech_end_ms=650.0,
        utterance=np.zeros(160, np.float32),
    )


def test_stream_events_keep_their_json_shape() -> None:
    final = dump(event_message(_final_event()))
    assert final["type"] == "final" and final["is_final"] is True and "audio" not in final
    assert final["confidence"] == 0.9123 and final["stream_time_ms"] == 1500.0
    assert final["words"] == [
        {"word": "Hello", "start": 0.1, "end": 0.4, "probability": 0.95},
        {"word": "there.", "start": 0.5, "end": 0.9, "probability": 0.9},
    ]
    with_audio = dump(event_message(_final_event(), with_audio=True))
    assert base64.b64decode(str(with_audio["audio"])) == b"\x00\x00" * 160
    error = dump(event_message(StreamEvent(EventKind.ERROR, code="NO_SPEECH", message="no speech")))
    assert set(error) == {"type", "stream_time_ms", "code", "message", "trace_id"}
    started = dump(event_message(StreamEvent(EventKind.SPEECH_STARTED, audio_start_ms=12.34)))
    assert started == {"type": "speech_started", "stream_time_ms": 0.0, "audio_start_ms": 12.3}
    assert dump(event_message(StreamEvent(EventKind.END, stream_time_ms=9.0))) == {
        "type": "end",
        "stream_time_ms": 9.0,
    }
