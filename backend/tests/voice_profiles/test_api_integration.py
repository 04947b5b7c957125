"""The voice-profile REST API end to end against real parts: PostgreSQL 16 + pgvector, an S3 server
(rclone serve s3), the GE2E speaker encoder, the sample decoder and the embedded Piper TTS.

Only the ASR is a fake here (transcripts are not what is under test). Residue after a delete is
checked directly in the database and in the S3 server's data directory, not through the adapters.
"""

from __future__ import annotations

import io
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from sqlalchemy import text

from avatar.bootstrap import Container
from avatar.infrastructure.database import SqlUnitOfWorkFactory
from avatar.presentation.app import create_app
from backend.tests.voice_profiles.speech import Clip
from backend.tests.voice_profiles.stack import real_parts
from tests.support.auth import bearer, make_user
from tests.support.servers import S3Server

API = "/api/v1/voice-profiles"


class Stack:
    def __init__(
        self, client: httpx.AsyncClient, factory: SqlUnitOfWorkFactory, bucket_dir: Path, container: Container
    ) -> None:
        self.container = container
        self.client = client
        self.factory = factory
        self.bucket_dir = bucket_dir

    async def rows(self, profile_id: str | None = None) -> int:
        query = "SELECT count(*) FROM voice_profiles"
        params: dict[str, Any] = {}
        if profile_id is not None:
            query += " WHERE profile_id = :pid"
            params["pid"] = uuid.UUID(profile_id)
        async with self.factory.engine.connect() as conn:
            return int((await conn.execute(text(query), params)).scalar_one())

    def objects(self, profile_id: str) -> list[str]:
        root = self.bucket_dir / "voice_profiles" / profile_id
        return sorted(str(p.relative_to(self.bucket_dir)) for p in root.rglob("*") if p.is_file())

    def all_objects(self) -> list[str]:
        return sorted(str(p.relative_to(self.bucket_dir)) for p in self.bucket_dir.rglob("*") if p.is_file())

    async def upload(
        self,
        data: bytes,
        name: str | None = "voice",
        filename: str = "sample.wav",
        transcript: str | None = None,
    ) -> httpx.Response:
        form = {k: v for k, v in {"name": name, "transcript": transcript}.items() if v is not None}
        return await self.client.post(API, files={"audio": (filename, data)}, data=form)


@pytest_asyncio.fixture(scope="module")
async def stack(
    module_database_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with real_parts(module_database_url, s3_server, tmp_path_factory.mktemp("avatar-var")) as parts:
        app = create_app(parts.settings, parts.container)
        _user, key = await make_user(parts.container)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", timeout=120, headers=bearer(key)
            ) as client:
                yield Stack(client, parts.factory, parts.bucket_dir, parts.container)


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"] and body["trace_id"]
    return str(body["message"])


async def test_same_speaker_ranks_above_every_other_speaker(
    stack: Stack, speakers: dict[str, list[Clip]]
) -> None:
    ids: dict[str, str] = {}
    for name, clips in speakers.items():
        response = await stack.upload(clips[0].wav(), name=name, transcript="a voice sample")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["name"] == name and body["duration_sec"] == pytest.approx(clips[0].duration_s, abs=0.05)
        ids[name] = body["profile_id"]
    assert await stack.rows() >= len(speakers)

    for name, clips in speakers.items():
        response = await stack.client.post(
            f"{API}/search", files={"audio": ("query.wav", clips[1].wav())}, data={"limit": "10"}
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        by_id = {r["profile"]["profile_id"]: r["similarity"] for r in results}
        assert results[0]["profile"]["profile_id"] == ids[name], (name, results)
        others = [by_id[ids[o]] for o in speakers if o != name]
        assert by_id[ids[name]] > max(others)
        assert [r["similarity"] for r in results] == sorted(by_id.values(), reverse=True)

    listed = (await stack.client.get(API)).json()["profiles"]
    assert set(ids.values()) <= {p["profile_id"] for p in listed}


async def test_get_audio_preview_and_delete_leave_no_residue(
    stack: Stack, speakers: dict[str, list[Clip]]
) -> None:
    clip = speakers["reader"][0]
    created = await stack.upload(
        clip.encoded("flac"),
        name="Reader",
        filename="reader.flac",
        transcript="she was sitting by the window",
    )
    assert created.status_code == 201, created.text
    pid = created.json()["profile_id"]
    assert stack.objects(pid) == [f"voice_profiles/{pid}/metadata.json", f"voice_profiles/{pid}/original.wav"]
    assert await stack.rows(pid) == 1

    got = (await stack.client.get(f"{API}/{pid}")).json()
    assert got["transcript"] == "she was sitting by the window"
    assert got["metadata"]["source_format"] == "flac"
    audio = await stack.client.get(got["audio_path"])
    assert audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, clip.sample_rate)

    preview = await stack.client.post(
        f"{API}/{pid}/preview", json={"text": "Hello, this is my voice.", "mode": "fast"}
    )
    assert preview.status_code == 200, preview.text
    assert preview.headers["content-type"] == "audio/wav"
    assert preview.headers["x-voice-engine"] == "piper"
    assert preview.headers["x-voice-substituted"] == "true"
    assert "cannot clone" in unquote(preview.headers["x-voice-notice"])
    with wave.open(io.BytesIO(preview.content)) as w:
        assert w.getnframes() / w.getframerate() > 0.5

    deleted = await stack.client.delete(f"{API}/{pid}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_objects"] == 2
    assert await stack.rows(pid) == 0
    assert stack.objects(pid) == []
    assert not [key for key in stack.all_objects() if pid in key]
    _error(await stack.client.get(f"{API}/{pid}"), 404, "VOICE_PROFILE_NOT_FOUND")
    _error(await stack.client.delete(f"{API}/{pid}"), 404, "VOICE_PROFILE_NOT_FOUND")
    missing = await stack.client.post(f"{API}/{pid}/preview", json={"text": "hi"})
    _error(missing, 404, "VOICE_PROFILE_NOT_FOUND")


async def test_every_bad_upload_gets_a_clear_4xx_and_stores_nothing(
    stack: Stack, speakers: dict[str, list[Clip]]
) -> None:
    clip = speakers["espeak_m3"][0]
    rate = clip.sample_rate
    before = await stack.rows()
    stored_before = stack.all_objects()
    cases: list[tuple[bytes, int, str]] = [
        (b"just some text, not audio\n" * 40, 415, "UNSUPPORTED_FORMAT"),
        (np.random.default_rng(3).bytes(30_000), 415, "UNSUPPORTED_FORMAT"),
        (_wav(clip.samples[: 2 * rate], rate), 422, "TOO_SHORT"),
        (_wav(np.tile(clip.samples, 5)[: 32 * rate], rate), 422, "TOO_LONG"),
        (b"RIFF" + bytes(11 * 1024 * 1024), 413, "TOO_LARGE"),
        (_wav(np.zeros(6 * rate), rate), 422, "SILENT"),
        (_wav(np.clip(clip.samples * 15, -1, 1), rate), 422, "CLIPPED"),
    ]
    for data, status, code in cases:
        _error(await stack.upload(data), status, code)
    assert "name" in _error(await stack.upload(clip.wav(), name=None), 422, "INVALID_INPUT")
    _error(await stack.upload(clip.wav(), name="   "), 422, "INVALID_FIELD")
    _error(await stack.client.post(API, data={"name": "no audio"}), 422, "INVALID_INPUT")
    assert await stack.rows() == before
    assert stack.all_objects() == stored_before


async def test_bad_ids_and_requests(stack: Stack, speakers: dict[str, list[Clip]]) -> None:
    unknown = uuid.uuid4()
    _error(await stack.client.get(f"{API}/{unknown}"), 404, "VOICE_PROFILE_NOT_FOUND")
    _error(await stack.client.get(f"{API}/{unknown}/audio"), 404, "VOICE_PROFILE_NOT_FOUND")
    for bad in ("not-a-uuid", "123"):
        _error(await stack.client.get(f"{API}/{bad}"), 422, "INVALID_INPUT")
        _error(await stack.client.delete(f"{API}/{bad}"), 422, "INVALID_INPUT")
        _error(await stack.client.post(f"{API}/{bad}/preview", json={"text": "hi"}), 422, "INVALID_INPUT")
    _error(await stack.client.post(f"{API}/{unknown}/preview", json={"text": ""}), 422, "INVALID_INPUT")
    _error(
        await stack.client.post(f"{API}/{unknown}/preview", json={"text": "hi", "mode": "ultra"}),
        422,
        "INVALID_INPUT",
    )
    query = speakers["joe"][1].wav()
    for limit in ("0", "51", "many"):
        response = await stack.client.post(
            f"{API}/search", files={"audio": ("q.wav", query)}, data={"limit": limit}
        )
        _error(response, 422, "INVALID_INPUT")
    _error(
        await stack.client.post(f"{API}/search", files={"audio": ("q.txt", b"hello")}),
        415,
        "UNSUPPORTED_FORMAT",
    )


async def test_a_voice_profile_is_its_owners_alone(stack: Stack, speakers: dict[str, list[Clip]]) -> None:
    """docs/security.md: another user's profile answers 404 everywhere and never shows up in a list
    or a search; an admin sees it, and that access is audited."""
    clip = speakers["reader"][0]
    created = await stack.upload(clip.wav(), name="Mine", transcript="a voice sample")
    assert created.status_code == 201, created.text
    pid = created.json()["profile_id"]
    _stranger, stranger_key = await make_user(stack.container, f"stranger-{uuid.uuid4().hex[:6]}")
    admin, admin_key = await make_user(stack.container, f"admin-{uuid.uuid4().hex[:6]}", admin=True)
    as_stranger, as_admin = bearer(stranger_key), bearer(admin_key)

    for method, path, body in (
        ("GET", f"{API}/{pid}", None),
        ("GET", f"{API}/{pid}/audio", None),
        ("POST", f"{API}/{pid}/preview", {"text": "hi", "mode": "fast"}),
        ("DELETE", f"{API}/{pid}", None),
    ):
        foreign = await stack.client.request(method, path, json=body, headers=as_stranger)
        _error(foreign, 404, "VOICE_PROFILE_NOT_FOUND")
        anonymous = await stack.client.request(method, path, json=body, headers={"Authorization": ""})
        _error(anonymous, 401, "UNAUTHENTICATED")
        wrong_key = await stack.client.request(method, path, json=body, headers=bearer("avk_not-a-key"))
        _error(wrong_key, 401, "INVALID_KEY")
    listed = (await stack.client.get(API, headers=as_stranger)).json()["profiles"]
    assert pid not in [p["profile_id"] for p in listed]
    _error(await stack.client.get(API, params={"all_users": "true"}, headers=as_stranger), 403, "ADMIN_ONLY")
    searched = await stack.client.post(
        f"{API}/search", files={"audio": ("q.wav", speakers["reader"][1].wav())}, headers=as_stranger
    )
    assert searched.status_code == 200 and pid not in [
        r["profile"]["profile_id"] for r in searched.json()["results"]
    ]
    assert await stack.rows(pid) == 1 and stack.objects(pid)

    assert (await stack.client.get(f"{API}/{pid}", headers=as_admin)).status_code == 200
    everyone = (await stack.client.get(API, params={"all_users": "true"}, headers=as_admin)).json()[
        "profiles"
    ]
    assert pid in [p["profile_id"] for p in everyone]
    audit = (await stack.client.get("/api/v1/audit", headers=as_admin)).json()["entries"]
    assert any(
        e["action"] == "voice_profile.read" and e["target"] == pid and e["actor_id"] == str(admin.user_id)
        for e in audit
    )
    _error(await stack.client.get("/api/v1/audit", headers=as_stranger), 403, "ADMIN_ONLY")
