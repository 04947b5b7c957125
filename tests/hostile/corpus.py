"""The bad-input corpus as data: hostile WebSocket frames, REST requests and uploads, each with the
answer docs/protocol.md (Limits and errors) promises. Used by ``test_corpus.py``."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import wave
from dataclasses import dataclass, field

TONE_SR = 16000


def tone_pcm(ms: int, sr: int = TONE_SR, amplitude: int = 6000) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        max(-32768, min(32767, int(amplitude * math.sin(2 * math.pi * 200 * i / sr)))).to_bytes(
            2, "little", signed=True
        )
        for i in range(n)
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def msg(**fields: object) -> str:
    return json.dumps(fields)


@dataclass(frozen=True)
class WsCase:
    """A text (or binary) frame sent on an open, authenticated socket, and the ``error`` code."""

    frame: str | bytes
    code: str


def _chunk(**extra: object) -> str:
    return json.dumps({"type": "audio_chunk", "data": b64(tone_pcm(20)), "sr": 16000, **extra})


def _raw_chunk(field_text: str) -> str:
    """An audio_chunk whose last field is spliced in raw (NaN, 1e400 ... are not valid JSON)."""
    data = b64(tone_pcm(20))
    return f'{{"type":"audio_chunk","data":"{data}","sr":16000,{field_text}}}'


DEEP = 100_000
WS_CASES: dict[str, WsCase] = {
    # --- not JSON, or JSON Python accepts but the protocol does not -----------------------
    "not-json": WsCase("{not json", "INVALID_JSON"),
    "empty-text": WsCase("", "INVALID_JSON"),
    "blank-text": WsCase("   ", "INVALID_JSON"),
    "truncated": WsCase('{"type":"ping"', "INVALID_JSON"),
    "trailing-garbage": WsCase('{"type":"ping"} x', "INVALID_JSON"),
    "unterminated-string": WsCase('{"type":"ping', "INVALID_JSON"),
    "single-quotes": WsCase("{'type':'ping'}", "INVALID_JSON"),
    "bare-NaN": WsCase("NaN", "INVALID_JSON"),
    "timestamp-NaN": WsCase(_raw_chunk('"timestamp":NaN'), "INVALID_JSON"),
    "timestamp-Infinity": WsCase(_raw_chunk('"timestamp":Infinity'), "INVALID_JSON"),
    "timestamp-minus-Infinity": WsCase(_raw_chunk('"timestamp":-Infinity'), "INVALID_JSON"),
    "timestamp-1e400": WsCase(_raw_chunk('"timestamp":1e400'), "INVALID_JSON"),
    "timestamp-minus-1e400": WsCase(_raw_chunk('"timestamp":-1e400'), "INVALID_JSON"),
    "timestamp-5000-digits": WsCase(_raw_chunk('"timestamp":' + "9" * 5000), "INVALID_JSON"),
    "sr-1e400": WsCase('{"type":"audio_chunk","data":"AAAA","sr":1e400}', "INVALID_JSON"),
    "sr-NaN": WsCase('{"type":"audio_chunk","data":"AAAA","sr":NaN}', "INVALID_JSON"),
    "sr-40-digits": WsCase('{"type":"audio_chunk","data":"AAAA","sr":' + "1" * 40 + "}", "INVALID_JSON"),
    "ping-NaN": WsCase('{"type":"ping","t":NaN}', "INVALID_JSON"),
    "ping-Infinity": WsCase('{"type":"ping","t":Infinity}', "INVALID_JSON"),
    "ping-1e309": WsCase('{"type":"ping","t":1e309}', "INVALID_JSON"),
    "played-ms-Infinity": WsCase('{"type":"interrupt","played_ms":Infinity}', "INVALID_JSON"),
    "played-ms-NaN": WsCase('{"type":"interrupt","played_ms":NaN}', "INVALID_JSON"),
    "played-ms-1e999": WsCase('{"type":"interrupt","played_ms":1e999}', "INVALID_JSON"),
    "nested-arrays-100000": WsCase("[" * DEEP + "]" * DEEP, "INVALID_JSON"),
    "nested-objects-40000": WsCase('{"a":' * 40_000 + "1" + "}" * 40_000, "INVALID_JSON"),
    "nested-unclosed-100000": WsCase("[" * DEEP, "INVALID_JSON"),
    "nested-33-in-a-message": WsCase('{"type":"ping","x":' + "[" * 33 + "]" * 33 + "}", "INVALID_JSON"),
    "nested-in-text-field": WsCase(
        '{"type":"text_input","text":' + "[" * 1000 + "]" * 1000 + "}", "INVALID_JSON"
    ),
    # --- JSON, but not a message ------------------------------------------------------------
    "array": WsCase("[1, 2]", "INVALID_MESSAGE"),
    "string": WsCase('"ping"', "INVALID_MESSAGE"),
    "number": WsCase("42", "INVALID_MESSAGE"),
    "null": WsCase("null", "INVALID_MESSAGE"),
    "true": WsCase("true", "INVALID_MESSAGE"),
    "empty-object": WsCase("{}", "INVALID_MESSAGE"),
    "type-number": WsCase(msg(type=5), "INVALID_MESSAGE"),
    "type-null": WsCase(msg(type=None), "INVALID_MESSAGE"),
    "type-list": WsCase(msg(type=["ping"]), "INVALID_MESSAGE"),
    "unknown-type": WsCase(msg(type="dance"), "UNKNOWN_MESSAGE_TYPE"),
    "type-wrong-case": WsCase(msg(type="AUDIO_CHUNK"), "UNKNOWN_MESSAGE_TYPE"),
    "type-empty": WsCase(msg(type=""), "UNKNOWN_MESSAGE_TYPE"),
    "type-with-NUL": WsCase(msg(type="ping\x00"), "UNKNOWN_MESSAGE_TYPE"),
    "type-10000-chars": WsCase(msg(type="x" * 10_000), "UNKNOWN_MESSAGE_TYPE"),
    "server-message-type": WsCase(msg(type="turn_completed"), "UNKNOWN_MESSAGE_TYPE"),
    # --- text_input ---------------------------------------------------------------------------
    "text-empty": WsCase(msg(type="text_input", text=""), "INVALID_MESSAGE"),
    "text-NUL": WsCase(msg(type="text_input", text="hello\x00there"), "INVALID_MESSAGE"),
    "text-only-NUL": WsCase(msg(type="text_input", text="\x00"), "INVALID_MESSAGE"),
    "text-lone-surrogate": WsCase('{"type":"text_input","text":"a\\ud800b"}', "INVALID_MESSAGE"),
    "text-lone-low-surrogate": WsCase('{"type":"text_input","text":"\\udfff"}', "INVALID_MESSAGE"),
    "text-4001-chars": WsCase(msg(type="text_input", text="a" * 4001), "INVALID_MESSAGE"),
    "text-number": WsCase(msg(type="text_input", text=5), "INVALID_MESSAGE"),
    "text-null": WsCase(msg(type="text_input", text=None), "INVALID_MESSAGE"),
    "text-list": WsCase(msg(type="text_input", text=["hi"]), "INVALID_MESSAGE"),
    "text-object": WsCase(msg(type="text_input", text={"a": 1}), "INVALID_MESSAGE"),
    "text-missing": WsCase(msg(type="text_input"), "INVALID_MESSAGE"),
    # --- set_tts_mode ---------------------------------------------------------------------------
    "mode-unknown": WsCase(msg(type="set_tts_mode", mode="ultra"), "INVALID_MESSAGE"),
    "mode-missing": WsCase(msg(type="set_tts_mode"), "INVALID_MESSAGE"),
    "mode-number": WsCase(msg(type="set_tts_mode", mode=1), "INVALID_MESSAGE"),
    "mode-NUL": WsCase(msg(type="set_tts_mode", mode="fast\x00"), "INVALID_MESSAGE"),
    "voice-NUL": WsCase(msg(type="set_tts_mode", mode="fast", voice="amy\x00"), "INVALID_MESSAGE"),
    "voice-10000-chars": WsCase(msg(type="set_tts_mode", mode="fast", voice="v" * 10_000), "INVALID_MESSAGE"),
    "voice-101-chars": WsCase(msg(type="set_tts_mode", mode="fast", voice="v" * 101), "INVALID_MESSAGE"),
    "voice-number": WsCase(msg(type="set_tts_mode", mode="fast", voice=7), "INVALID_MESSAGE"),
    "profile-not-uuid": WsCase(
        msg(type="set_tts_mode", mode="hq", voice_profile_id="not-a-uuid"), "INVALID_MESSAGE"
    ),
    "profile-number": WsCase(msg(type="set_tts_mode", mode="hq", voice_profile_id=5), "INVALID_MESSAGE"),
    "profile-unknown": WsCase(
        msg(type="set_tts_mode", mode="hq", voice_profile_id="00000000-0000-4000-8000-000000000000"),
        "VOICE_PROFILE_NOT_FOUND",
    ),
    # --- interrupt --------------------------------------------------------------------------------
    "played-ms-negative": WsCase(msg(type="interrupt", played_ms=-1), "INVALID_MESSAGE"),
    "played-ms-1e13": WsCase(msg(type="interrupt", played_ms=1e13), "INVALID_MESSAGE"),
    "played-ms-string": WsCase(msg(type="interrupt", played_ms="abc"), "INVALID_MESSAGE"),
    "played-ms-list": WsCase(msg(type="interrupt", played_ms=[1]), "INVALID_MESSAGE"),
    "heard-text-NUL": WsCase(msg(type="interrupt", heard_text="he\x00llo"), "INVALID_MESSAGE"),
    "heard-text-8001-chars": WsCase(msg(type="interrupt", heard_text="h" * 8001), "INVALID_MESSAGE"),
    "heard-text-number": WsCase(msg(type="interrupt", heard_text=5), "INVALID_MESSAGE"),
    "heard-text-surrogate": WsCase('{"type":"interrupt","heard_text":"\\ud83d"}', "INVALID_MESSAGE"),
    # --- ping ---------------------------------------------------------------------------------------
    "ping-string": WsCase(msg(type="ping", t="abc"), "INVALID_MESSAGE"),
    "ping-1e13": WsCase(msg(type="ping", t=1e13), "INVALID_MESSAGE"),
    "ping-minus-1e13": WsCase(msg(type="ping", t=-1e13), "INVALID_MESSAGE"),
    "ping-list": WsCase(msg(type="ping", t=[1]), "INVALID_MESSAGE"),
    "ping-object": WsCase(msg(type="ping", t={}), "INVALID_MESSAGE"),
    # --- auth on an authenticated socket -----------------------------------------------------------
    "late-auth": WsCase(msg(type="auth", token="x"), "INVALID_MESSAGE"),
    "late-auth-empty": WsCase(msg(type="auth", token=""), "INVALID_MESSAGE"),
    "late-auth-NUL": WsCase(msg(type="auth", token="a\x00b"), "INVALID_MESSAGE"),
    "late-auth-huge": WsCase(msg(type="auth", token="t" * 600), "INVALID_MESSAGE"),
    # --- audio_chunk fields ------------------------------------------------------------------------
    "chunk-data-missing": WsCase(msg(type="audio_chunk", sr=16000), "INVALID_MESSAGE"),
    "chunk-data-number": WsCase(msg(type="audio_chunk", data=5), "INVALID_MESSAGE"),
    "chunk-data-null": WsCase(msg(type="audio_chunk", data=None), "INVALID_MESSAGE"),
    "chunk-timestamp-1e13": WsCase(_chunk(timestamp=1e13), "INVALID_MESSAGE"),
    "chunk-timestamp-minus-1e13": WsCase(_chunk(timestamp=-1e13), "INVALID_MESSAGE"),
    "chunk-timestamp-string": WsCase(_chunk(timestamp="now"), "INVALID_MESSAGE"),
    "chunk-sr-string": WsCase(_chunk(sr="16k"), "INVALID_MESSAGE"),
    "chunk-sr-zero": WsCase(_chunk(sr=0), "INVALID_MESSAGE"),
    "chunk-sr-negative": WsCase(_chunk(sr=-16000), "INVALID_MESSAGE"),
    "chunk-sr-fraction": WsCase(_chunk(sr=16000.5), "INVALID_MESSAGE"),
    "chunk-sr-2e9": WsCase(_chunk(sr=2_000_000_000), "INVALID_MESSAGE"),
    "chunk-data-not-base64": WsCase(msg(type="audio_chunk", data="@@not base64@@"), "INVALID_AUDIO"),
    "chunk-data-odd-bytes": WsCase(msg(type="audio_chunk", data=b64(b"abc")), "INVALID_AUDIO"),
    "chunk-data-empty": WsCase(msg(type="audio_chunk", data=""), "INVALID_AUDIO"),
    "chunk-data-padding-only": WsCase(msg(type="audio_chunk", data="===="), "INVALID_AUDIO"),
    "chunk-data-urlsafe-alphabet": WsCase(msg(type="audio_chunk", data="__--"), "INVALID_AUDIO"),
    "chunk-data-NUL": WsCase(msg(type="audio_chunk", data="AA\x00A"), "INVALID_AUDIO"),
    "chunk-sr-12345": WsCase(_chunk(sr=12345), "UNSUPPORTED_SAMPLE_RATE"),
    "chunk-sr-1": WsCase(_chunk(sr=1), "UNSUPPORTED_SAMPLE_RATE"),
    "chunk-sr-7999": WsCase(_chunk(sr=7999), "UNSUPPORTED_SAMPLE_RATE"),
    "chunk-sr-96000": WsCase(_chunk(sr=96000), "UNSUPPORTED_SAMPLE_RATE"),
    "chunk-sr-1000000": WsCase(_chunk(sr=1_000_000), "UNSUPPORTED_SAMPLE_RATE"),
    # --- binary frames (raw PCM16) --------------------------------------------------------------------
    "binary-odd-length": WsCase(b"\x01\x02\x03", "INVALID_AUDIO"),
    "binary-one-byte": WsCase(b"\x00", "INVALID_AUDIO"),
    "binary-empty": WsCase(b"", "INVALID_AUDIO"),
}


# --- WAV files with lying or exotic headers ------------------------------------------------------


def wav_bytes(
    *,
    tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    data: bytes | None = None,
    byte_rate: int | None = None,
    block_align: int | None = None,
    data_size: int | None = None,
    riff_size: int | None = None,
    fmt_size: int = 16,
) -> bytes:
    """A RIFF/WAVE file built field by field, so that any field can lie."""
    if data is None:
        data = tone_pcm(6000)
    block = block_align if block_align is not None else channels * max(bits, 8) // 8
    fmt = struct.pack(
        "<HHIIHH", tag, channels, rate, byte_rate if byte_rate is not None else rate * block, block, bits
    )
    fmt += b"\x00" * (fmt_size - 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt
    body += b"data" + struct.pack("<I", data_size if data_size is not None else len(data)) + data
    return b"RIFF" + struct.pack("<I", riff_size if riff_size is not None else len(body)) + body


def real_wav(ms: int, *, amplitude: int = 6000, sr: int = TONE_SR) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(tone_pcm(ms, sr, amplitude))
    return out.getvalue()


@dataclass(frozen=True)
class UploadCase:
    """A voice-profile upload (``audio`` and form fields) with the status and error code."""

    audio: bytes
    status: int
    code: str
    form: dict[str, str] = field(default_factory=lambda: {"name": "corpus voice"})
    filename: str = "sample.wav"


_UNSUPPORTED = (415, "UNSUPPORTED_FORMAT")
UPLOAD_CASES: dict[str, UploadCase] = {
    "wav-0-bits-per-sample": UploadCase(wav_bytes(bits=0), *_UNSUPPORTED),
    "wav-format-tag-0x1234": UploadCase(wav_bytes(tag=0x1234), *_UNSUPPORTED),
    "wav-format-tag-0": UploadCase(wav_bytes(tag=0), *_UNSUPPORTED),
    "wav-format-tag-0xffff": UploadCase(wav_bytes(tag=0xFFFF), *_UNSUPPORTED),
    "wav-extensible-without-extension": UploadCase(wav_bytes(tag=0xFFFE), *_UNSUPPORTED),
    "wav-0-channels": UploadCase(wav_bytes(channels=0), *_UNSUPPORTED),
    "wav-0-sample-rate": UploadCase(wav_bytes(rate=0), *_UNSUPPORTED),
    # Read as 8-bit samples, the 16-bit tone is mostly at full scale.
    "wav-7-bits-per-sample": UploadCase(wav_bytes(bits=7), 422, "CLIPPED"),
    "wav-65535-bits": UploadCase(wav_bytes(bits=65535), *_UNSUPPORTED),
    "wav-fmt-chunk-too-short": UploadCase(wav_bytes(fmt_size=8)[:28], *_UNSUPPORTED),
    "wav-header-only": UploadCase(wav_bytes(data=b""), *_UNSUPPORTED),
    "wav-riff-only": UploadCase(b"RIFF", *_UNSUPPORTED),
    "wav-riff-wave-only": UploadCase(b"RIFF\x04\x00\x00\x00WAVE", *_UNSUPPORTED),
    "wav-truncated-in-fmt": UploadCase(wav_bytes()[:30], *_UNSUPPORTED),
    "empty-file": UploadCase(b"", *_UNSUPPORTED),
    "text-file": UploadCase(b"hello, this is not audio\n" * 40, *_UNSUPPORTED, filename="a.txt"),
    "json-file": UploadCase(b'{"audio": NaN}', *_UNSUPPORTED, filename="a.json"),
    "png-magic": UploadCase(b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, *_UNSUPPORTED, filename="a.png"),
    "id3-then-garbage": UploadCase(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xaa" * 4000, *_UNSUPPORTED),
    "ogg-magic-then-garbage": UploadCase(b"OggS" + b"\x00" * 4000, *_UNSUPPORTED, filename="a.ogg"),
    "flac-magic-then-garbage": UploadCase(b"fLaC" + b"\x00" * 4000, *_UNSUPPORTED, filename="a.flac"),
    "webm-magic-then-garbage": UploadCase(b"\x1a\x45\xdf\xa3" + b"\xff" * 4000, *_UNSUPPORTED),
    "random-bytes": UploadCase(bytes(range(256)) * 40, *_UNSUPPORTED),
    "zip-magic": UploadCase(b"PK\x03\x04" + b"\x00" * 4000, *_UNSUPPORTED, filename="a.zip"),
    "silent-wav": UploadCase(real_wav(6000, amplitude=0), 422, "SILENT"),
    "too-short-wav": UploadCase(real_wav(1000), 422, "TOO_SHORT"),
    "too-long-wav": UploadCase(real_wav(40_000), 422, "TOO_LONG"),
    "clipped-wav": UploadCase(real_wav(6000, amplitude=40_000), 422, "CLIPPED"),
    "over-10-MB": UploadCase(b"RIFF" + b"\x00" * (11 * 1024 * 1024), 413, "TOO_LARGE"),
    "name-NUL": UploadCase(real_wav(6000), 422, "INVALID_FIELD", form={"name": "my\x00voice"}),
    "name-10000-chars": UploadCase(real_wav(6000), 422, "INVALID_INPUT", form={"name": "n" * 10_000}),
    "name-101-chars": UploadCase(real_wav(6000), 422, "INVALID_INPUT", form={"name": "n" * 101}),
    "name-empty": UploadCase(real_wav(6000), 422, "INVALID_INPUT", form={"name": ""}),
    "name-whitespace": UploadCase(real_wav(6000), 422, "INVALID_FIELD", form={"name": "   "}),
    "name-missing": UploadCase(real_wav(6000), 422, "INVALID_INPUT", form={}),
    "transcript-NUL": UploadCase(
        real_wav(6000), 422, "INVALID_FIELD", form={"name": "v", "transcript": "hi\x00there"}
    ),
    "transcript-2001-chars": UploadCase(
        real_wav(6000), 422, "INVALID_INPUT", form={"name": "v", "transcript": "t" * 2001}
    ),
}


# --- REST requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestCase:
    """A request (``{sid}``/``{pid}`` in the path are filled in) and the status and error code."""

    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None
    content_type: str = "application/json"


def _meta(raw: str) -> bytes:
    return ('{"metadata":' + raw + "}").encode()


_NO_ID = "00000000-0000-4000-8000-000000000000"
_JSON = (422, "INVALID_JSON")
_INPUT = (422, "INVALID_INPUT")
REST_CASES: dict[str, RestCase] = {
    # --- session bodies -------------------------------------------------------------------------
    "metadata-NaN": RestCase("POST", "/api/v1/sessions", *_JSON, _meta('{"a":NaN}')),
    "metadata-Infinity": RestCase("POST", "/api/v1/sessions", *_JSON, _meta('{"a":Infinity}')),
    "metadata-minus-Infinity": RestCase("POST", "/api/v1/sessions", *_JSON, _meta('{"a":-Infinity}')),
    "metadata-1e400": RestCase("POST", "/api/v1/sessions", *_JSON, _meta('{"a":1e400}')),
    "metadata-5000-digit-int": RestCase(
        "POST", "/api/v1/sessions", *_JSON, _meta('{"a":' + "7" * 5000 + "}")
    ),
    "body-nested-100000": RestCase("POST", "/api/v1/sessions", *_JSON, ("[" * DEEP + "]" * DEEP).encode()),
    "metadata-nested-40000": RestCase(
        "POST", "/api/v1/sessions", *_JSON, _meta('{"a":' * 40_000 + "1" + "}" * 40_000)
    ),
    "body-not-json": RestCase("POST", "/api/v1/sessions", *_JSON, b"not json"),
    "body-truncated": RestCase("POST", "/api/v1/sessions", *_JSON, b'{"metadata":{'),
    "body-not-utf8": RestCase("POST", "/api/v1/sessions", *_JSON, b'{"metadata":{"a":"\xff\xfe"}}'),
    "body-10-MB": RestCase(
        "POST", "/api/v1/sessions", 413, "PAYLOAD_TOO_LARGE", _meta('{"a":"' + "x" * 10_000_000 + '"}')
    ),
    "metadata-17-KB": RestCase(
        "POST", "/api/v1/sessions", *_INPUT, _meta(json.dumps({"a": "x" * 17 * 1024}))
    ),
    "metadata-depth-9": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('{"a":' * 9 + "1" + "}" * 9)),
    "metadata-NUL-value": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('{"a":"x\\u0000y"}')),
    "metadata-NUL-key": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('{"a\\u0000":"x"}')),
    "metadata-NUL-in-list": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('{"a":["ok","\\u0000"]}')),
    "metadata-surrogate": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('{"a":"\\ud800"}')),
    "metadata-list": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta("[1,2]")),
    "metadata-string": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta('"labels"')),
    "metadata-null": RestCase("POST", "/api/v1/sessions", *_INPUT, _meta("null")),
    "unknown-field": RestCase("POST", "/api/v1/sessions", *_INPUT, b'{"metadata":{},"admin":true}'),
    "body-array": RestCase("POST", "/api/v1/sessions", *_INPUT, b"[]"),
    "body-number": RestCase("POST", "/api/v1/sessions", *_INPUT, b"42"),
    # --- queries and ids ---------------------------------------------------------------------------
    "limit-0": RestCase("GET", "/api/v1/sessions?limit=0", *_INPUT),
    "limit-201": RestCase("GET", "/api/v1/sessions?limit=201", *_INPUT),
    "limit-text": RestCase("GET", "/api/v1/sessions?limit=abc", *_INPUT),
    "limit-NaN": RestCase("GET", "/api/v1/sessions?limit=NaN", *_INPUT),
    "limit-1e400": RestCase("GET", "/api/v1/sessions?limit=1e400", *_INPUT),
    "limit-huge": RestCase("GET", "/api/v1/sessions?limit=" + "9" * 5000, *_INPUT),
    "session-not-uuid": RestCase("GET", "/api/v1/sessions/not-a-uuid", *_INPUT),
    "session-NUL-id": RestCase("GET", "/api/v1/sessions/%00", *_INPUT),
    "session-unknown": RestCase("GET", f"/api/v1/sessions/{_NO_ID}", 404, "SESSION_NOT_FOUND"),
    "turns-unknown": RestCase("GET", f"/api/v1/sessions/{_NO_ID}/turns", 404, "SESSION_NOT_FOUND"),
    "turns-not-uuid": RestCase("GET", "/api/v1/sessions/x/turns", *_INPUT),
    "profile-not-uuid": RestCase("GET", "/api/v1/voice-profiles/not-a-uuid", *_INPUT),
    "profile-unknown": RestCase("GET", f"/api/v1/voice-profiles/{_NO_ID}", 404, "VOICE_PROFILE_NOT_FOUND"),
    "profile-audio-unknown": RestCase(
        "GET", f"/api/v1/voice-profiles/{_NO_ID}/audio", 404, "VOICE_PROFILE_NOT_FOUND"
    ),
    "profile-delete-unknown": RestCase(
        "DELETE", f"/api/v1/voice-profiles/{_NO_ID}", 404, "VOICE_PROFILE_NOT_FOUND"
    ),
    "object-unsigned": RestCase("GET", "/api/v1/objects/raw_inputs/nothing.wav", *_INPUT),
    "object-expires-text": RestCase("GET", "/api/v1/objects/raw_inputs/x.wav?expires=soon&sig=x", *_INPUT),
    "memory-q-NUL": RestCase("GET", "/api/v1/memory/search?q=a%00b", *_INPUT),
    "memory-q-empty": RestCase("GET", "/api/v1/memory/search?q=", *_INPUT),
    "memory-q-1001-chars": RestCase("GET", "/api/v1/memory/search?q=" + "m" * 1001, *_INPUT),
    "memory-limit-NaN": RestCase("GET", "/api/v1/memory/search?q=hi&limit=NaN", *_INPUT),
    "memory-session-not-uuid": RestCase("GET", "/api/v1/memory/search?q=hi&session_id=x", *_INPUT),
    # --- previews ------------------------------------------------------------------------------------
    "preview-NaN": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", *_JSON, b'{"text":"hi","x":NaN}'
    ),
    # the profile is looked up (and its owner checked) before the body is read
    "preview-text-NUL": RestCase(
        "POST",
        f"/api/v1/voice-profiles/{_NO_ID}/preview",
        404,
        "VOICE_PROFILE_NOT_FOUND",
        b'{"text":"h\\u0000i"}',
    ),
    "preview-text-empty": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", *_INPUT, b'{"text":""}'
    ),
    "preview-text-501": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", *_INPUT, json.dumps({"text": "p" * 501}).encode()
    ),
    "preview-mode-unknown": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", *_INPUT, b'{"text":"hi","mode":"ultra"}'
    ),
    "preview-unknown-profile": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", 404, "VOICE_PROFILE_NOT_FOUND", b'{"text":"hi"}'
    ),
    "preview-nested": RestCase(
        "POST", f"/api/v1/voice-profiles/{_NO_ID}/preview", *_JSON, ("[" * DEEP).encode()
    ),
    # --- routes and methods that do not exist --------------------------------------------------------
    "unknown-route": RestCase("GET", "/api/v1/nope", 404, "NOT_FOUND"),
    "unknown-version": RestCase("GET", "/api/v2/sessions", 404, "NOT_FOUND"),
    "unknown-post-route": RestCase("POST", "/api/v1/nope", 404, "NOT_FOUND", b"{}"),
    "route-with-NUL": RestCase("GET", "/api/v1/%00", 404, "NOT_FOUND"),
    "delete-sessions": RestCase("DELETE", "/api/v1/sessions", 405, "METHOD_NOT_ALLOWED"),
    "put-session": RestCase("PUT", f"/api/v1/sessions/{_NO_ID}", 405, "METHOD_NOT_ALLOWED", b"{}"),
    "patch-profiles": RestCase("PATCH", "/api/v1/voice-profiles", 405, "METHOD_NOT_ALLOWED", b"{}"),
    "post-health": RestCase("POST", "/api/v1/health", 405, "METHOD_NOT_ALLOWED", b"{}"),
    "search-limit-0": RestCase(
        "POST", "/api/v1/voice-profiles/search", *_INPUT, b"limit=0", "application/x-www-form-urlencoded"
    ),
}
