"""The prosody service over HTTP: ASGI transport for the cases, one real uvicorn + process pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from avatar_common.audio import encode_audio, encode_wav, float_to_pcm16
from avatar_prosody.app import ServiceConfig, create_app
from avatar_prosody.synth import synthetic_voice
from tests.support.audio import SpeechClip
from tests.support.net import running_server

RATE = 16000


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServiceConfig(workers=1, executor="thread", warm_up=False, max_seconds=30.0))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://prosody") as c,
    ):
        yield c


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["trace_id"]


async def test_multipart_wav_gives_features_and_scores(
    client: httpx.AsyncClient, librivox: list[SpeechClip]
) -> None:
    clip = librivox[1]
    wav = encode_wav(clip.samples, clip.sample_rate)
    r = await client.post("/analyze", files={"file": ("u.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reliable"] is True and body["reason"] is None
    assert set(body["scores"]) == {"confidence", "stability", "affability"}
    assert all(0 <= v <= 100 for v in body["scores"].values())
    assert 60 <= body["features"]["f0_mean_hz"] <= 400
    assert body["baseline_used"] is False
    assert abs(body["duration_s"] - clip.duration_s) < 0.01


async def test_raw_bodies_and_baseline(client: httpx.AsyncClient) -> None:
    voice = synthetic_voice(2.5, level_dbfs=-20)
    as_wav = await client.post(
        "/analyze", content=encode_wav(voice, RATE), headers={"content-type": "audio/wav"}
    )
    as_pcm = await client.post(
        "/analyze",
        content=float_to_pcm16(voice),
        params={"sample_rate": RATE},
        headers={"content-type": "audio/L16"},
    )
    as_mp3 = await client.post(
        "/analyze", content=encode_audio(voice, RATE, "mp3"), headers={"content-type": "audio/mpeg"}
    )
    for r in (as_wav, as_pcm, as_mp3):
        assert r.status_code == 200, r.text
        assert r.json()["reliable"] is True
    assert as_wav.json()["scores"] == as_pcm.json()["scores"]
    loud = as_wav.json()["features"]["intensity_mean_db"]
    usual_quiet = json.dumps({"intensity_mean_db": loud - 10})
    relative = await client.post(
        "/analyze",
        content=encode_wav(voice, RATE),
        params={"baseline": usual_quiet},
        headers={"content-type": "audio/wav"},
    )
    assert relative.json()["baseline_used"] is True
    assert relative.json()["scores"]["confidence"] > as_wav.json()["scores"]["confidence"]
    form = await client.post(
        "/analyze",
        files={"file": ("u.wav", encode_wav(voice, RATE), "audio/wav")},
        data={"baseline": usual_quiet},
    )
    assert form.json()["scores"] == relative.json()["scores"]


async def test_unusable_speech_is_200_but_unreliable(client: httpx.AsyncClient) -> None:
    cases = {
        "too_short": synthetic_voice(0.3),
        "silent": np.zeros(RATE * 2, dtype=np.float32),
        "clipped": np.clip(synthetic_voice(2.0, level_dbfs=-3) * 4.0, -1.0, 1.0),
        "non_speech": (0.1 * np.random.default_rng(1).standard_normal(RATE * 2)).astype(np.float32),
    }
    for reason, samples in cases.items():
        r = await client.post("/analyze", files={"file": ("x.wav", encode_wav(samples, RATE), "audio/wav")})
        assert r.status_code == 200, r.text
        assert (r.json()["reliable"], r.json()["reason"]) == (False, reason)


async def test_bad_requests_get_clear_4xx(client: httpx.AsyncClient) -> None:
    garbage = bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8))
    _assert_error(
        await client.post("/analyze", content=garbage, headers={"content-type": "audio/wav"}),
        422,
        "INVALID_AUDIO",
    )
    _assert_error(await client.post("/analyze", content=b""), 422, "INVALID_AUDIO")
    _assert_error(
        await client.post("/analyze", files={"other": ("x.txt", b"hi", "text/plain")}), 422, "INVALID_AUDIO"
    )
    _assert_error(
        await client.post(
            "/analyze",
            content=b"\x00\x01\x02",
            params={"sample_rate": RATE},
            headers={"content-type": "audio/L16"},
        ),
        422,
        "INVALID_AUDIO",
    )
    _assert_error(
        await client.post(
            "/analyze",
            content=b"\x00\x01",
            params={"sample_rate": "fast"},
            headers={"content-type": "audio/L16"},
        ),
        422,
        "INVALID_SAMPLE_RATE",
    )
    wav = encode_wav(synthetic_voice(1.0), RATE)
    for baseline in ("{not json", "[1, 2]", '{"hnr_db": "high"}'):
        _assert_error(
            await client.post(
                "/analyze", content=wav, params={"baseline": baseline}, headers={"content-type": "audio/wav"}
            ),
            422,
            "INVALID_BASELINE",
        )
    too_long = encode_wav(np.zeros(RATE * 31, dtype=np.float32), RATE)
    _assert_error(
        await client.post("/analyze", content=too_long, headers={"content-type": "audio/wav"}),
        413,
        "AUDIO_TOO_LONG",
    )
    low_rate = encode_wav(np.zeros(4000 * 2, dtype=np.float32), 4000)
    _assert_error(
        await client.post("/analyze", content=low_rate, headers={"content-type": "audio/wav"}),
        422,
        "INVALID_AUDIO",
    )
    # The service is still up and counted every rejection.
    assert (await client.get("/health")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'prosody_analyses_total{outcome="rejected"}' in metrics


async def test_metrics_record_latency_and_outcomes(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    await client.post(
        "/analyze", content=encode_wav(synthetic_voice(2.0), RATE), headers={"content-type": "audio/wav"}
    )
    after = (await client.get("/metrics")).text

    def count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith("prosody_analysis_seconds_count"):
                return float(line.split()[-1])
        return 0.0

    assert count(after) == count(before) + 1
    assert 'prosody_analyses_total{outcome="reliable"}' in after


async def test_real_server_with_worker_processes(librivox: list[SpeechClip]) -> None:
    app = create_app(ServiceConfig(workers=2, executor="process"))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as c:
        health = (await c.get("/health")).json()
        assert health == {
            "status": "ok",
            "workers": 2,
            "executor": "process",
            "pending": 0,
            "max_pending": 16,
        }
        wavs = [encode_wav(clip.samples, clip.sample_rate) for clip in librivox[:3]]
        replies = await asyncio.gather(
            *(c.post("/analyze", files={"file": ("u.wav", w, "audio/wav")}) for w in wavs)
        )
        for r in replies:
            assert r.status_code == 200, r.text
            assert r.json()["reliable"] is True
            assert 60 <= r.json()["features"]["f0_mean_hz"] <= 400
