"""The binary audio frame codec (docs/protocol.md, "Binary audio frames"): exact byte layouts,
round trips, and every refusal."""

from __future__ import annotations

import struct
import uuid

import pytest

from avatar.application.conversation.events import AudioChunkMsg
from avatar.domain.models import TTSMode
from avatar.presentation.audio_frames import (
    AUDIO_IN_HEADER,
    AUDIO_OUT_HEADER,
    MAX_AUDIO_IN_BYTES,
    FrameError,
    decode_audio_in,
    decode_audio_out,
    encode_audio_in,
    encode_audio_out,
)


def test_header_sizes_are_the_documented_ones() -> None:
    assert AUDIO_IN_HEADER.size == 20
    assert AUDIO_OUT_HEADER.size == 36


def test_a_microphone_frame_is_read_byte_by_byte_as_documented() -> None:
    pcm = bytes(range(8))
    frame = b"\x01\x00\x00\x00" + (44100).to_bytes(4, "little") + (7).to_bytes(4, "little")
    frame += (-1234).to_bytes(8, "little", signed=True) + pcm
    decoded = decode_audio_in(frame)
    assert (decoded.sample_rate, decoded.seq, decoded.timestamp_ms, decoded.pcm) == (44100, 7, -1234, pcm)
    assert encode_audio_in(pcm, 44100, 7, -1234) == frame


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"", "header"),
        (b"\x01" * 19, "header"),
        (encode_audio_in(b"\x00\x00", 16000, 0)[:20], "non-empty"),
        (b"\x07" + encode_audio_in(b"\x00\x00", 16000, 0)[1:], "kind 0x07"),
        (encode_audio_in(b"\x00\x00\x00", 16000, 0), "even"),
        (encode_audio_in(b"\x00" * (MAX_AUDIO_IN_BYTES + 2), 16000, 0), "at most"),
        (encode_audio_in(b"\x00\x00", 16000, 0, 10**12 + 1), "timestamp"),
    ],
)
def test_bad_microphone_frames_are_refused_with_invalid_audio(frame: bytes, needle: str) -> None:
    with pytest.raises(FrameError) as refused:
        decode_audio_in(frame)
    assert refused.value.code == "INVALID_AUDIO"
    assert needle in refused.value.message


def test_the_largest_allowed_frame_passes() -> None:
    frame = encode_audio_in(b"\x01\x00" * (MAX_AUDIO_IN_BYTES // 2), 48000, 1)
    assert len(decode_audio_in(frame).pcm) == MAX_AUDIO_IN_BYTES


def _reply(text: str = "Hello there!", mode: TTSMode = TTSMode.HQ) -> AudioChunkMsg:
    return AudioChunkMsg(
        turn_id=uuid.UUID("12345678-9abc-def0-1234-56789abcdef0"),
        data=b"\x10\x00\xf0\xff",
        sr=22050,
        mode=mode,
        seq=3,
        duration_ms=512.25,
        text=text,
    )


def test_a_reply_frame_carries_what_the_json_audio_chunk_carries() -> None:
    message = _reply("héllo")
    frame = encode_audio_out(message)
    text = "héllo".encode()
    assert frame[0] == 0x02 and frame[1] == 1
    assert struct.unpack_from("<H", frame, 2)[0] == len(text)
    assert frame[4:20] == message.turn_id.bytes
    assert struct.unpack_from("<IId", frame, 20) == (3, 22050, 512.25)
    assert frame[36 : 36 + len(text)] == text and frame[36 + len(text) :] == message.data
    assert decode_audio_out(frame) == message
    assert decode_audio_out(encode_audio_out(_reply("", TTSMode.FAST))) == _reply("", TTSMode.FAST)


def test_an_overlong_clause_is_cut_at_a_character_boundary() -> None:
    frame = encode_audio_out(_reply("é" * 40_000))  # 80 000 bytes of UTF-8
    decoded = decode_audio_out(frame)
    assert decoded.text == "é" * (0xFFFF // 2) and decoded.data == b"\x10\x00\xf0\xff"


def test_a_malformed_reply_frame_is_refused() -> None:
    frame = encode_audio_out(_reply())
    for bad in (frame[:35], b"\x01" + frame[1:], frame[:1] + b"\x05" + frame[2:], frame[:37]):
        with pytest.raises(FrameError):
            decode_audio_out(bad)
