"""The service app under a real uvicorn server: the official openai client, WebSocket, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import httpx
import numpy as np
import pytest
import websockets
from openai import OpenAI

from avatar_common.audio import decode_audio, pcm16_to_float

from .conftest import RunningServer

TEXT = "Good morning. The weather is lovely today, so let us go for a walk."


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus", "flac"])
def test_openai_client_gets_speech_in_every_format(
    tts_server: RunningServer, fmt: Literal["wav", "pcm", "mp3", "opus", "flac"]
) -> None:
    with (
        OpenAI(base_url=f"{tts_server.url}/v1", api_key="not-needed") as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="default", input=TEXT, response_format=fmt
        ) as response,
    ):
        assert response.headers["x-tts-engine"] == "piper"
        rate = int(response.headers["x-sample-rate"])
        body = b"".join(response.iter_bytes())
    if fmt == "pcm":
        samples, got_rate = pcm16_to_float(body), rate
    else:
        decoded = decode_audio(body)
        samples, got_rate = decoded.samples, decoded.sample_rate
        expected = {"wav": "wav", "mp3": "mp3", "opus": "ogg", "flac": "flac"}[fmt]
        assert decoded.source_format.startswith(expected)
    assert got_rate == (48000 if fmt == "opus" else 22050)
    seconds = samples.size / got_rate
    assert 2.5 < seconds < 10
    assert float(np.abs(samples).max()) > 0.1


def test_openai_client_hq_model_and_explicit_voice(tts_server: RunningServer) -> None:
    with (
        OpenAI(base_url=f"{tts_server.url}/v1", api_key="not-needed") as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1-hd", voice="kokoro:jf_nezumi", input="Hello.", response_format="wav"
        ) as response,
    ):
        used = (response.headers["x-tts-engine"], response.headers["x-tts-voice"])
        assert used == ("kokoro", "kokoro:jf_nezumi")
        assert decode_audio(response.read()).sample_rate == 24000


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "tts-1", "input": ""}, 422, "EMPTY_TEXT"),
        ({"model": "tts-1", "input": "a" * 5000}, 422, "TEXT_TOO_LONG"),
        ({"model": "tts-1", "input": "bad\x1b[31m text"}, 422, "CONTROL_CHARACTERS"),
        ({"model": "tts-1", "input": "<speak>hi</speak>"}, 422, "MARKUP_NOT_SUPPORTED"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy"}, 404, "UNKNOWN_VOICE"),
        ({"model": "tts-9", "input": "hi"}, 404, "UNKNOWN_MODEL"),
        ({"model": "tts-1", "input": "hi", "language": "xx"}, 422, "UNSUPPORTED_LANGUAGE"),
        ({"model": "tts-1", "input": "hi", "response_format": "wma"}, 422, "INVALID_INPUT"),
        ({"model": "tts-1", "input": "hi", "speed": 10}, 422, "INVALID_INPUT"),
        ({"model": "tts-1"}, 422, "INVALID_INPUT"),
        ({"model": "tts-1", "input": "hi", "reference_audio": "%%%"}, 422, "INVALID_REFERENCE"),
    ],
)
def test_bad_requests_get_clear_errors_and_the_service_stays_up(
    tts_server: RunningServer, body: dict[str, object], status: int, code: str
) -> None:
    resp = httpx.post(f"{tts_server.url}/v1/audio/speech", json=body, timeout=60)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == code and error["message"] and error["trace_id"]
    assert httpx.get(f"{tts_server.url}/health", timeout=10).json()["status"] == "ok"


def test_voices_health_and_metrics(tts_server: RunningServer) -> None:
    voices = httpx.get(f"{tts_server.url}/v1/voices", timeout=10).json()["voices"]
    by_id = {v["id"]: v for v in voices}
    assert by_id["piper:en_US-joe-medium"] == {
        "id": "piper:en_US-joe-medium",
        "name": "en_US-joe-medium",
        "engine": "piper",
        "languages": ["en"],
        "tier": "fast",
        "can_clone": False,
    }
    assert by_id["kokoro:jm_kumo"]["tier"] == "hq"
    assert "ko" in by_id["espeak:ko"]["languages"]
    health = httpx.get(f"{tts_server.url}/health", timeout=10).json()
    assert health["ok"] and health["models"]["piper"]["loaded"] and health["hq_breaker"] == "closed"
    httpx.post(
        f"{tts_server.url}/v1/audio/speech", json={"input": "Hi there.", "response_format": "pcm"}, timeout=60
    ).raise_for_status()
    metrics = httpx.get(f"{tts_server.url}/metrics", timeout=10).text
    for name in (
        'tts_synthesis_latency_seconds_count{mode="fast"}',
        'tts_rtf_count{mode="fast"}',
        'tts_model_load_seconds_count{mode="fast"}',
    ):
        assert name in metrics


def _ws_url(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://") + "/v1/audio/speech/stream"


async def test_websocket_speaks_text_sent_token_by_token(tts_server: RunningServer) -> None:
    async with websockets.connect(_ws_url(tts_server)) as ws:
        await ws.send(json.dumps({"type": "start", "model": "tts-1"}))
        for token in ["Hello", " there", ",", " my", " friend", ".", " How", " are", " you", "?"]:
            await ws.send(json.dumps({"type": "text", "text": token}))
        start = json.loads(await ws.recv())
        assert start["type"] == "start" and start["engine"] == "piper" and start["sample_rate"] == 22050
        await ws.send(json.dumps({"type": "end"}))
        pcm = b""
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                pcm += msg
                continue
            event = json.loads(msg)
            break
        assert event["type"] == "done"
        assert event["audio_seconds"] == pytest.approx(len(pcm) / 2 / 22050, abs=0.01)
        assert event["audio_seconds"] > 1.0
        # The same connection takes another utterance; a bad one gets a typed error event.
        await ws.send(json.dumps({"type": "start", "voice": "nobody"}))
        await ws.send(json.dumps({"type": "text", "text": "Hi. "}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "UNKNOWN_VOICE"


async def test_websocket_cancel_stops_the_utterance(tts_server: RunningServer) -> None:
    async with websockets.connect(_ws_url(tts_server)) as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.send(json.dumps({"type": "text", "text": "One two three. " * 40}))
        assert json.loads(await ws.recv())["type"] == "start"
        assert isinstance(await ws.recv(), bytes)
        await ws.send(json.dumps({"type": "cancel"}))
        frames = 0
        while True:
            msg = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(msg, bytes):
                frames += 1
                continue
            assert json.loads(msg)["type"] == "cancelled"
            break
        assert frames < 40  # not the whole text
