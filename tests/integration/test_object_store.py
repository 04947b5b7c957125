"""Object stores: the filesystem store (+ its signed download route) and S3 against ``rclone serve s3``."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from avatar.domain.errors import DependencyError, DomainError, InvalidInputError, NotFoundError
from avatar.domain.models import TTSMode
from avatar.domain.storage_keys import raw_input_key, synthesized_key, voice_profile_key, voice_profile_prefix
from avatar.infrastructure.object_store import (
    EncryptingObjectStore,
    FilesystemObjectStore,
    S3ObjectStore,
    UrlSigner,
    build_object_store,
)
from avatar.presentation import objects
from avatar.presentation.errors import install_error_handlers
from avatar.settings import ObjectStoreSettings, SecuritySettings, Settings
from tests.fakes import FakeClock
from tests.support.net import free_port
from tests.support.servers import S3Server

SESSION = uuid.UUID("11111111-1111-4111-8111-111111111111")
TURN = uuid.UUID("22222222-2222-4222-8222-222222222222")
PROFILE = uuid.UUID("33333333-3333-4333-8333-333333333333")
TS = datetime(2025, 11, 22, 8, 30, 15, 250000, tzinfo=UTC)
WAV = b"RIFF" + bytes(range(256)) * 8


def test_keys_follow_the_design_layout() -> None:
    assert raw_input_key(SESSION, TURN, TS) == f"raw_inputs/2025/11/22/{SESSION}_{TURN}_1763800215250.wav"
    assert synthesized_key(TURN, TTSMode.HQ, TS) == f"synthesized/hq/{TURN}_hq_1763800215250.wav"
    assert synthesized_key(TURN, "fast", TS).startswith("synthesized/fast/")
    assert voice_profile_key(PROFILE) == f"voice_profiles/{PROFILE}/original.wav"
    assert voice_profile_key(PROFILE, "metadata.json") == f"{voice_profile_prefix(PROFILE)}metadata.json"
    with pytest.raises(DomainError):
        raw_input_key(SESSION, TURN, datetime(2025, 1, 1))  # naive time
    with pytest.raises(DomainError):
        voice_profile_key(PROFILE, "../../etc/passwd")


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects", UrlSigner(b"test-secret"))


@pytest_asyncio.fixture
async def s3_store(s3_server: S3Server, s3_bucket: str) -> AsyncIterator[S3ObjectStore]:
    store = S3ObjectStore.connect(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, s3_bucket)
    await store.ensure_bucket()
    yield store
    store.close()


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest) -> FilesystemObjectStore | S3ObjectStore:
    name = "fs_store" if request.param == "filesystem" else "s3_store"
    value: FilesystemObjectStore | S3ObjectStore = request.getfixturevalue(name)
    return value


async def test_put_get_list_and_delete(store: FilesystemObjectStore | S3ObjectStore) -> None:
    raw = raw_input_key(SESSION, TURN, TS)
    fast = synthesized_key(TURN, TTSMode.FAST, TS)
    url = await store.put(raw, WAV, "audio/wav")
    await store.put(fast, b"fast audio", "audio/wav")
    await store.put(voice_profile_key(PROFILE), b"sample")
    await store.put(voice_profile_key(PROFILE, "metadata.json"), b"{}", "application/json")

    assert url.endswith(raw)
    assert url.startswith(("file://", "s3://"))
    assert await store.get(raw) == WAV
    assert await store.exists(raw)
    assert not await store.exists("raw_inputs/none.wav")
    assert await store.list_keys("synthesized/") == [fast]
    assert await store.list_keys(voice_profile_prefix(PROFILE)) == [
        voice_profile_key(PROFILE, "metadata.json"),
        voice_profile_key(PROFILE),
    ]
    assert len(await store.list_keys("")) == 4

    await store.put(raw, b"replaced")
    assert await store.get(raw) == b"replaced"

    assert await store.delete_prefix(voice_profile_prefix(PROFILE)) == 2
    assert await store.list_keys("voice_profiles/") == []
    await store.delete(fast)
    await store.delete(fast)  # deleting a missing object is not an error
    assert not await store.exists(fast)
    with pytest.raises(NotFoundError):
        await store.get(fast)
    assert (await store.health()).ok


async def test_bad_keys_and_prefixes_are_refused(store: FilesystemObjectStore | S3ObjectStore) -> None:
    for key in ("../escape.wav", "/abs.wav", "a//b.wav", "a/./b", "", "spaces here.wav", "x\n.wav"):
        with pytest.raises(DomainError):
            await store.put(key, b"x")
    with pytest.raises(InvalidInputError):
        await store.delete_prefix("")
    with pytest.raises(InvalidInputError):
        await store.presigned_url("raw_inputs/a.wav", timedelta(days=30))


async def test_s3_presigned_url_downloads_with_plain_http(s3_store: S3ObjectStore) -> None:
    key = synthesized_key(TURN, TTSMode.HQ, TS)
    await s3_store.put(key, WAV, "audio/wav")
    url = await s3_store.presigned_url(key)
    assert "X-Amz-Expires=3600" in url
    async with httpx.AsyncClient() as client:
        ok = await client.get(url)
        tampered = await client.get(url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"))
    assert ok.status_code == 200
    assert ok.content == WAV
    assert tampered.status_code == 403


async def test_s3_outage_is_retried_then_reported(caplog: pytest.LogCaptureFixture) -> None:
    store = S3ObjectStore.connect(
        f"127.0.0.1:{free_port()}", "k", "s", "avatar-audio", retries=2, base_delay_s=0.01, timeout_s=1.0
    )
    with caplog.at_level(logging.WARNING, logger="avatar.infrastructure.object_store"):
        with pytest.raises(DependencyError) as err:
            await store.put("raw_inputs/a.wav", b"x")
    assert "after 3 attempts" in err.value.message
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "ERROR"]
    assert not (await store.health()).ok
    store.close()


def _objects_app(store: FilesystemObjectStore, clock: FakeClock | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(objects.router)
    app.state.container = SimpleNamespace(
        object_store=store,
        settings=Settings(_env_file=None, environment="test"),
        clock=clock or FakeClock(TS + timedelta(minutes=1)),
    )
    return app


async def test_filesystem_presigned_url_is_served_and_checked(fs_store: FilesystemObjectStore) -> None:
    key = raw_input_key(SESSION, TURN, TS)
    await fs_store.put(key, WAV, "audio/wav")
    url = await fs_store.presigned_url(key)
    expired = int(time.time()) - 5
    expired_url = f"/api/v1/objects/{key}?expires={expired}&sig={fs_store.signer.sign(key, expired)}"
    other = raw_input_key(SESSION, uuid.uuid4(), TS)
    clock = FakeClock(TS + timedelta(minutes=1))
    transport = httpx.ASGITransport(app=_objects_app(fs_store, clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://avatar") as client:
        ok = await client.get(url)
        forged = await client.get(url.replace(key, other))
        stale = await client.get(expired_url)
        unsigned = await client.get(f"/api/v1/objects/{key}")
        await fs_store.delete(key)
        gone = await client.get(url)
        clock.advance(timedelta(days=31).total_seconds())  # past the 30 days raw inputs are kept
        expired_audio = await client.get(url)
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "audio/wav"
    assert ok.content == WAV
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "BAD_SIGNATURE"
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "URL_EXPIRED"
    assert unsigned.status_code == 422
    assert gone.status_code == 404
    assert expired_audio.status_code == 410
    assert expired_audio.json()["error"]["code"] == "AUDIO_EXPIRED"


async def test_build_object_store_by_kind(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    fs_settings = Settings(
        object_store=ObjectStoreSettings(kind="filesystem", root=tmp_path / "var" / "objects"),
        security=SecuritySettings(secret_key="s3cret"),
        data_dir=tmp_path / "var",
    )
    s3_settings = Settings(
        data_dir=tmp_path / "var",
        object_store=ObjectStoreSettings(
            kind="s3",
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=s3_bucket,
        ),
    )
    async with contextlib.AsyncExitStack() as stack:
        fs = await build_object_store(fs_settings, stack)
        s3 = await build_object_store(s3_settings, stack)
        # Both are wrapped in the encrypting store (docs/security.md); the tests in
        # tests/security/test_encryption_at_rest.py check what reaches the disk and the bucket.
        assert isinstance(fs, EncryptingObjectStore) and isinstance(fs.inner, FilesystemObjectStore)
        assert isinstance(s3, EncryptingObjectStore) and isinstance(s3.inner, S3ObjectStore)
        assert (await fs.health()).ok
        assert (await s3.health()).ok  # the bucket was created
        assert (s3_server.root / s3_bucket).is_dir()
        assert (await fs.presigned_url("backups/x.json")).startswith(
            "/api/v1/objects/backups/x.json?expires="
        )
        # The bucket only holds ciphertext, so S3 downloads also go through the decrypting route.
        assert (await s3.presigned_url("backups/x.json")).startswith(
            "/api/v1/objects/backups/x.json?expires="
        )
