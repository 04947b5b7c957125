"""Binary audio frames of the conversation socket (docs/protocol.md, "Binary audio frames").

A client that connects with ``?audio=binary`` may send its microphone as binary WebSocket frames
and receives reply audio as binary frames; every other message stays JSON text. All integers are
little-endian.

* client -> server, kind ``0x01``: a 20-byte header (kind u8, 3 zero bytes, sample rate u32,
  sequence u32, timestamp i64 in ms), then PCM16 mono samples;
* server -> client, kind ``0x02``: a 36-byte header (kind u8, mode u8 ``0`` fast / ``1`` hq,
  text length u16, turn id 16 bytes, sequence u32, sample rate u32, duration f64 in ms), then the
  clause's UTF-8 text, then PCM16 mono samples: what a JSON ``audio_chunk`` carries.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from avatar.application.conversation.events import AudioChunkMsg
from avatar.domain.models import TTSMode

#: The query parameter value that asks for binary audio frames.
BINARY_AUDIO = "binary"
KIND_AUDIO_IN = 0x01
KIND_AUDIO_OUT = 0x02
AUDIO_IN_HEADER = struct.Struct("<B3xIIq")
AUDIO_OUT_HEADER = struct.Struct("<BBH16sIId")
#: The most audio one microphone frame may carry (2 s at 48 kHz), far above the ~20-300 ms a
#: client sends per chunk; larger frames are refused without closing the socket.
MAX_AUDIO_IN_BYTES = 2 * 48_000 * 2
#: Timestamps are bounded like the JSON ``timestamp`` (docs/protocol.md, Limits).
MAX_TIMESTAMP_MS = 10**12
MAX_TEXT_BYTES = 0xFFFF
_MODES = {TTSMode.FAST: 0, TTSMode.HQ: 1}


class FrameError(ValueError):
    """A binary frame the server refuses; ``code`` is the ``error`` event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AudioIn:
    """One decoded microphone frame."""

    sample_rate: int
    seq: int
    timestamp_ms: int
    pcm: bytes


def decode_audio_in(frame: bytes) -> AudioIn:
    """A client's binary frame, checked; :class:`FrameError` names what is wrong."""
    size = len(frame)
    if size < AUDIO_IN_HEADER.size:
        raise FrameError(
            "INVALID_AUDIO", f"a binary frame needs a {AUDIO_IN_HEADER.size}-byte header; got {size} bytes"
        )
    if frame[0] != KIND_AUDIO_IN:
        raise FrameError(
            "INVALID_AUDIO", f"unknown binary frame kind 0x{frame[0]:02x} (0x{KIND_AUDIO_IN:02x} is audio)"
        )
    _, sample_rate, seq, timestamp_ms = AUDIO_IN_HEADER.unpack_from(frame)
    pcm_bytes = size - AUDIO_IN_HEADER.size
    if pcm_bytes == 0 or pcm_bytes % 2:
        raise FrameError("INVALID_AUDIO", "audio must be PCM16 mono: a non-empty, even number of bytes")
    if pcm_bytes > MAX_AUDIO_IN_BYTES:
        raise FrameError(
            "INVALID_AUDIO", f"a binary frame carries at most {MAX_AUDIO_IN_BYTES} bytes of audio"
        )
    if abs(timestamp_ms) > MAX_TIMESTAMP_MS:
        raise FrameError("INVALID_AUDIO", f"timestamp must be within +-{MAX_TIMESTAMP_MS} ms")
    return AudioIn(sample_rate, seq, timestamp_ms, frame[AUDIO_IN_HEADER.size :])


def encode_audio_in(pcm: bytes, sample_rate: int, seq: int, timestamp_ms: int = 0) -> bytes:
    """A microphone frame as a client sends it (the load bench and the tests)."""
    return AUDIO_IN_HEADER.pack(KIND_AUDIO_IN, sample_rate, seq, timestamp_ms) + pcm


def _text_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= MAX_TEXT_BYTES:
        return raw
    return raw[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore").encode("utf-8")


def encode_audio_out(message: AudioChunkMsg) -> bytes:
    """A reply ``audio_chunk`` as one binary frame."""
    text = _text_bytes(message.text)
    header = AUDIO_OUT_HEADER.pack(
        KIND_AUDIO_OUT,
        _MODES[message.mode],
        len(text),
        message.turn_id.bytes,
        message.seq,
        message.sr,
        message.duration_ms,
    )
    return b"".join((header, text, message.data))


def decode_audio_out(frame: bytes) -> AudioChunkMsg:
    """A reply audio frame back into the message it carries (clients in Python and the tests)."""
    if len(frame) < AUDIO_OUT_HEADER.size or frame[0] != KIND_AUDIO_OUT:
        raise FrameError("INVALID_AUDIO", "not a reply audio frame")
    _, mode, text_len, turn_id, seq, sr, duration_ms = AUDIO_OUT_HEADER.unpack_from(frame)
    start = AUDIO_OUT_HEADER.size
    if mode not in (0, 1) or len(frame) < start + text_len:
        raise FrameError("INVALID_AUDIO", "a malformed reply audio frame")
    return AudioChunkMsg(
        turn_id=uuid.UUID(bytes=turn_id),
        data=frame[start + text_len :],
        sr=sr,
        mode=TTSMode.FAST if mode == 0 else TTSMode.HQ,
        seq=seq,
        duration_ms=duration_ms,
        text=frame[start : start + text_len].decode("utf-8"),
    )
