"""The service over real HTTP and WebSocket: the `openai` client, a websockets client, bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import websockets

from avatar_common.audio import encode_audio, encode_wav, resample
from services.asr.tests.conftest import RunningServer
from services.asr.tests.helpers import noise, normalize_words, pcm16, silence, wer
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.slow


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local", max_retries=0, timeout=120)


def webm(samples: np.ndarray, rate: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.webm"
        src.write_bytes(encode_wav(samples, rate))
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:a", "libopus", str(dst)],
            check=True,
            timeout=60,
        )
        return dst.read_bytes()


def post(server: RunningServer, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/audio/transcriptions", timeout=120, **kwargs)


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code", "trace_id"}  # OpenAI's shape
    assert body["error"]["message"] and body["error"]["type"]
    return dict(body["error"])


def test_openai_client_wer_over_librivox_is_at_most_5_percent(
    asr_server: RunningServer, librivox: list[SpeechClip]
) -> None:
    oai = client(asr_server)
    hypotheses = []
    for clip in librivox:
        result = oai.audio.transcriptions.create(
            model="whisper-base",
            file=(f"{clip.name}.wav", clip.path.read_bytes(), "audio/wav"),
            response_format="verbose_json",
            language="en",
        )
        assert result.language == "en"
        assert result.segments and result.words
        assert result.duration == pytest.approx(clip.duration_s, abs=0.05)
        hypotheses.append(result.text)
    score = wer([c.transcript for c in librivox], hypotheses)
    assert score <= 0.05, f"WER {score:.3f}: {hypotheses}"


@pytest.mark.parametrize(
    ("fmt", "response_format"),
    [("flac", "text"), ("mp3", "srt"), ("opus", "vtt"), ("webm", "json")],
)
def test_compressed_formats_and_response_formats(
    asr_server: RunningServer,
    librivox: list[SpeechClip],
    fmt: str,
    response_format: Literal["json", "text", "srt", "vtt"],
) -> None:
    clip = librivox[4]
    data = webm(clip.samples, 16000) if fmt == "webm" else encode_audio(clip.samples, 16000, fmt)
    oai = client(asr_server)
    result: Any = oai.audio.transcriptions.create(
        model="whisper-base",
        file=(f"clip.{'ogg' if fmt == 'opus' else fmt}", data),
        response_format=response_format,
    )
    text = result if isinstance(result, str) else result.text
    if response_format == "srt":
        assert text.startswith("1\n00:00:0") and " --> " in text
    if response_format == "vtt":
        assert text.startswith("WEBVTT")
    spoken = [line for line in text.splitlines() if line and "-->" not in line and not line.isdigit()]
    assert normalize_words(" ".join(spoken).replace("WEBVTT", "")) == normalize_words(clip.transcript)


def test_stereo_44k_upload_is_mixed_and_resampled(
    asr_server: RunningServer, librivox: list[SpeechClip]
) -> None:
    clip = librivox[1]
    at_44k = resample(clip.samples, 16000, 44100)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stereo.wav"
        sf.write(path, np.stack([at_44k, at_44k], axis=1), 44100, subtype="PCM_16")
        response = post(
            asr_server,
            files={"file": ("stereo.wav", path.read_bytes(), "audio/wav")},
            data={"response_format": "verbose_json"},
        )
    assert response.status_code == 200, response.text
    assert normalize_words(response.json()["text"]) == normalize_words(clip.transcript)


def _wav(samples: np.ndarray, rate: int) -> bytes:
    return encode_wav(samples.astype(np.float32), rate)


BAD_UPLOADS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty", {"files": {"file": ("a.wav", b"", "audio/wav")}}, 400, "EMPTY_AUDIO"),
    (
        "too-long",
        {"files": {"file": ("a.wav", _wav(silence(16 * 60, 8000), 8000), "audio/wav")}},
        413,
        "AUDIO_TOO_LONG",
    ),
    ("garbage", {"files": {"file": ("a.mp3", bytes(range(256)) * 64, "audio/mpeg")}}, 400, "INVALID_AUDIO"),
    (
        "truncated",
        {"files": {"file": ("a.mp3", encode_audio(silence(2.0), 16000, "mp3")[:120], "audio/mpeg")}},
        400,
        "INVALID_AUDIO",
    ),
    ("json-body", {"json": {"file": "hello"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "text-part",
        {"files": {"file": ("a.txt", b"hello there", "text/plain")}},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("missing-file", {"files": {"audio": ("a.wav", b"RIFF", "audio/wav")}}, 400, "MISSING_FILE"),
    (
        "bad-response-format",
        {"files": {"file": ("a.wav", b"RIFF", "audio/wav")}, "data": {"response_format": "xml"}},
        400,
        "INVALID_INPUT",
    ),
    (
        "bad-temperature",
        {"files": {"file": ("a.wav", b"RIFF", "audio/wav")}, "data": {"temperature": "hot"}},
        400,
        "INVALID_INPUT",
    ),
    (
        "odd-sample-rate",
        {"files": {"file": ("a.wav", _wav(silence(1.0, 2000), 2000), "audio/wav")}},
        400,
        "UNSUPPORTED_SAMPLE_RATE",
    ),
]


@pytest.mark.parametrize(("_name", "kwargs", "status", "code"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_get_clear_errors(
    asr_server: RunningServer, _name: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = post(asr_server, **kwargs)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert httpx.get(f"{asr_server.url}/health").json()["status"] == "ok"


def test_unsupported_container_is_refused(asr_server: RunningServer) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.aiff"
        sf.write(path, silence(1.0), 16000, format="AIFF", subtype="PCM_16")
        response = post(asr_server, files={"file": ("a.aiff", path.read_bytes(), "audio/aiff")})
    assert response.status_code == 415
    assert error_of(response)["code"] == "UNSUPPORTED_FORMAT"


def test_openai_client_sees_corrupt_audio_as_a_400_in_openais_shape(asr_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(asr_server).audio.transcriptions.create(
            model="whisper-base", file=("x.wav", b"not audio at all")
        )
    assert refused.value.status_code == 400
    assert refused.value.code == "INVALID_AUDIO"
    assert refused.value.type == "invalid_request_error" and refused.value.param is None
    assert isinstance(refused.value.body, dict) and refused.value.body["message"]


@pytest.mark.parametrize(
    ("name", "audio"),
    [("silence", silence(3.0)), ("faint-noise", noise(3.0, 0.003)), ("digital-zero-blip", silence(0.2))],
)
def test_openai_client_gets_an_empty_transcript_for_no_speech(
    asr_server: RunningServer, name: str, audio: np.ndarray
) -> None:
    oai = client(asr_server)
    raw = oai.audio.transcriptions.with_raw_response.create(
        model="whisper-base", file=(f"{name}.wav", _wav(audio, 16000), "audio/wav")
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-avatar-notice"] == "NO_SPEECH"
    result = raw.parse()
    assert result.text == ""
    verbose = oai.audio.transcriptions.create(
        model="whisper-base", file=(f"{name}.wav", _wav(audio, 16000)), response_format="verbose_json"
    )
    assert verbose.text == "" and verbose.segments == [] and verbose.words == []
    assert verbose.duration == pytest.approx(len(audio) / 16000, abs=0.01)
    assert getattr(verbose, "notice", None) == "NO_SPEECH"
    text = oai.audio.transcriptions.create(
        model="whisper-base", file=(f"{name}.wav", _wav(audio, 16000)), response_format="text"
    )
    assert text == ""


async def _ws_session(url: str, frames: list[bytes | str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None) as ws:
        messages.append(json.loads(await ws.recv()))
        for frame in frames:
            await ws.send(frame)
        async for raw in ws:
            messages.append(json.loads(raw))
            if messages[-1]["type"] == "end":
                break
    return messages


async def test_websocket_stream_with_bad_messages_in_between(
    asr_server: RunningServer, librivox: list[SpeechClip]
) -> None:
    clip = librivox[1]
    pcm = clip.pcm + pcm16(silence(0.8))
    step = 3200 * 2
    frames: list[bytes | str] = ["not json", json.dumps({"type": "dance"}), b"\x01\x02\x03"]
    frames += [pcm[i : i + step] for i in range(0, len(pcm), step)]
    frames.append(json.dumps({"type": "end"}))
    url = asr_server.url.replace("http", "ws") + "/v1/stream?language=en&sample_rate=16000"
    messages = await asyncio.wait_for(_ws_session(url, frames), timeout=300)
    types = [m["type"] for m in messages]
    assert types[0] == "ready" and types[-1] == "end"
    assert [m["code"] for m in messages if m["type"] == "error"] == [
        "INVALID_JSON",
        "UNKNOWN_MESSAGE_TYPE",
        "INVALID_AUDIO",
    ]
    assert "speech_started" in types
    final = next(m for m in messages if m["type"] == "final")
    assert final["is_final"] is True and final["language"] == "en"
    assert normalize_words(final["text"]) == normalize_words(clip.transcript)
    assert final["words"] and final["latency_ms"] >= 0


async def test_websocket_refuses_a_bad_sample_rate_parameter(asr_server: RunningServer) -> None:
    url = asr_server.url.replace("http", "ws") + "/v1/stream?sample_rate=fast"
    async with websockets.connect(url) as ws:
        message = json.loads(await ws.recv())
        assert message["type"] == "error" and message["code"] == "INVALID_MESSAGE"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{asr_server.url}/health")).json()["status"] == "ok"


def test_health_and_metrics(asr_server: RunningServer) -> None:
    health = httpx.get(f"{asr_server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "whisper-base"
    text = httpx.get(f"{asr_server.url}/metrics").text
    for name in (
        "asr_rtf_bucket",
        "asr_result_latency_seconds_bucket",
        "asr_vad_speech_ratio",
        "asr_active_streams",
        "asr_queue_pending",
    ):
        assert name in text
