"""Finding F6 (docs/security.md): voices and transcripts sat on disk in the clear.

Real speech (a LibriVox utterance and its transcript) is stored through the real adapters: the
filesystem store, the S3 store against ``rclone serve s3`` (whose files are read straight from its
directory), and PostgreSQL. The bytes at rest must be neither WAV nor the samples nor the words,
and everything must read back through the application (and the download route) unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from avatar import cli
from avatar.domain.models import ConversationTurn, Session, Transcription, VoiceProfile, new_id
from avatar.domain.storage_keys import raw_input_key, voice_profile_key
from avatar.domain.wav import pcm16_wav
from avatar.infrastructure.crypto import DecryptionError, Envelope
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.infrastructure.object_store import EncryptingObjectStore, build_object_store
from avatar.infrastructure.secrets import MASTER_FILE
from avatar.presentation import objects
from avatar.presentation.errors import install_error_handlers
from avatar.settings import Placement, Settings
from tests.support.audio import SpeechClip
from tests.support.auth import seed_owner
from tests.support.servers import PostgresServer, S3Server, fresh_database

NOW = datetime(2025, 11, 22, 12, 0, tzinfo=UTC)
SEALED_COLUMNS = {
    "conversation_turns": ("user_input", "ai_response"),
    "transcriptions": ("final_text", "partial_results"),
    "memories": ("text",),
    "conversation_summaries": ("summary",),
    "voice_profiles": ("transcript",),
}


def _words(clip: SpeechClip) -> list[str]:
    """The transcript's distinctive words (4+ letters), which must not appear at rest."""
    return sorted(set(re.findall(r"[a-z]{4,}", clip.transcript.lower())))


def _settings(tmp_path: Path, **object_store: object) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "var",
        object_store={"root": tmp_path / "objects", **object_store},
    )


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[EncryptingObjectStore]:
    async with contextlib.AsyncExitStack() as stack:
        yield await build_object_store(settings, stack)


def _assert_not_audio(raw: bytes, clip: SpeechClip) -> None:
    assert not raw.startswith(b"RIFF") and b"WAVE" not in raw and b"fmt " not in raw
    for start in range(0, len(clip.pcm) - 64, len(clip.pcm) // 8):
        assert clip.pcm[start : start + 64] not in raw  # no stretch of the samples survives


@pytest.mark.parametrize("kind", ["filesystem", "s3"])
async def test_stored_audio_is_ciphertext_on_disk_and_in_the_bucket(
    kind: str, tmp_path: Path, librivox: list[SpeechClip], request: pytest.FixtureRequest
) -> None:
    clip = librivox[0]
    wav = pcm16_wav(clip.pcm, clip.sample_rate)
    key = raw_input_key(uuid.uuid4(), uuid.uuid4(), NOW)
    if kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        settings = _settings(
            tmp_path,
            kind="s3",
            endpoint=s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            bucket=bucket,
        )
        at_rest = s3.root / bucket / key  # the file rclone keeps for the object
    else:
        settings = _settings(tmp_path)
        at_rest = tmp_path / "objects" / key
    async with _store(settings) as store:
        await store.put(key, wav, "audio/wav")
        raw = at_rest.read_bytes()
        _assert_not_audio(raw, clip)
        assert raw.startswith(b"AVE1") and len(raw) - len(wav) < 200
        assert await store.get(key) == wav

        # Downloads decrypt through the app's signed route, whichever store holds the bytes.
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(objects.router)
        app.state.container = SimpleNamespace(object_store=store)
        url = await store.presigned_url(key)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            download = await client.get(url)
            forged = await client.get(url.replace("sig=", "sig=0"))
        assert download.status_code == 200 and download.content == wav
        assert download.headers["content-type"] == "audio/wav"
        assert forged.status_code == 403

        # Ciphertext moved to another key, or altered, does not open.
        other = voice_profile_key(uuid.uuid4())
        await store.inner.put(other, raw)
        with pytest.raises(DecryptionError):
            await store.get(other)
        flipped = bytearray(raw)
        flipped[-20] ^= 1
        await store.inner.put(key, bytes(flipped))
        with pytest.raises(DecryptionError):
            await store.get(key)


async def _write_conversation(settings: Settings, clip: SpeechClip) -> uuid.UUID:
    reply = f"You said: {clip.transcript}"
    async with contextlib.AsyncExitStack() as stack:
        uow = await build_unit_of_work_factory(settings, stack)
        session = dataclasses.replace(Session.start(NOW), owner_id=await seed_owner(uow))
        turn = ConversationTurn(
            turn_id=new_id(),
            session_id=session.session_id,
            turn_number=1,
            user_input=clip.transcript,
            ai_response=reply,
        )
        transcription = Transcription(text=clip.transcript, is_final=True, confidence=0.9, language="en")
        embedding = tuple(float(v) for v in np.ones(512) / np.sqrt(512))
        async with uow() as tx:
            await tx.sessions.add(session)
            await tx.turns.add(turn)
            partials = [clip.transcript[: len(clip.transcript) // 2], clip.transcript]
            await tx.transcriptions.add(turn.turn_id, transcription, None, partials)
            await tx.memories.add(session.session_id, turn.turn_id, "user", clip.transcript, embedding)
            await tx.summaries.save(session.session_id, f"They talked about: {clip.transcript}", 1)
            await tx.voice_profiles.add(
                VoiceProfile(
                    profile_id=new_id(),
                    name="reader",
                    audio_url="file:///x/voice_profiles/x/original.wav",
                    embedding=tuple(float(v) for v in np.ones(256) / 16.0),
                    duration_sec=clip.duration_s,
                    sample_rate=clip.sample_rate,
                    transcript=clip.transcript,
                    user_id=session.owner_id,
                )
            )
            await tx.commit()
        # Everything reads back as it was written, and recall by meaning still finds the memory.
        async with uow() as tx:
            back = await tx.turns.get(turn.turn_id)
            assert back is not None and back.user_input == clip.transcript and back.ai_response == reply
            assert [t.user_input for t in await tx.turns.list_for_session(session.session_id)] == [
                clip.transcript
            ]
            stored = await tx.transcriptions.get(transcription.transcription_id)
            assert stored is not None and stored.text == clip.transcript
            hits = await tx.memories.search(embedding, limit=1, session_id=session.session_id)
            assert [h.text for h in hits] == [clip.transcript]
            assert await tx.summaries.load(session.session_id) == (f"They talked about: {clip.transcript}", 1)
            assert clip.transcript in [p.transcript for p in await tx.voice_profiles.list()]
    return session.session_id


async def _raw_columns(url: str) -> dict[str, list[str]]:
    """Every sealed column's values exactly as PostgreSQL stores them (no decryption)."""
    engine = create_async_engine(url)
    try:
        out: dict[str, list[str]] = {}
        async with engine.connect() as conn:
            for table, columns in SEALED_COLUMNS.items():
                for column in columns:
                    rows = await conn.execute(text(f"SELECT {column}::text FROM {table}"))
                    out[f"{table}.{column}"] = [str(r[0]) for r in rows]
        return out
    finally:
        await engine.dispose()


async def test_transcripts_replies_and_memories_are_ciphertext_in_postgres(
    tmp_path: Path, postgres_server: PostgresServer, librivox: list[SpeechClip]
) -> None:
    clip = librivox[1]
    async with fresh_database(postgres_server) as url:
        settings = _settings(tmp_path)
        settings.database.placement = Placement.REMOTE
        settings.database.url = SecretStr(url)
        await _write_conversation(settings, clip)
        raw = await _raw_columns(url)
    for column, values in raw.items():
        assert values, column
        for value in values:
            sealed = json.loads(value) if value.startswith('"') else value
            assert sealed.startswith("enc1:"), column
            assert clip.transcript not in value
            blob = base64.b64decode(sealed.removeprefix("enc1:"))
            for word in _words(clip):  # searched in the bytes, not in their base64 spelling
                assert word.encode() not in blob, (column, word)


def _key_ids(raw: dict[str, list[str]], objects_root: Path) -> set[str]:
    """The master-key ids named by every sealed value and object (plaintext fails loudly)."""
    ids = set()
    for values in raw.values():
        for value in values:
            sealed = json.loads(value) if value.startswith('"') else value
            assert sealed.startswith("enc1:"), value
            ids.add(Envelope.key_id_of(base64.b64decode(sealed.removeprefix("enc1:"))))
    for path in objects_root.rglob("*.wav"):
        ids.add(Envelope.key_id_of(path.read_bytes()))
    return ids


def test_avatar_keys_rotate_rewraps_every_data_key(
    tmp_path: Path,
    postgres_server: PostgresServer,
    librivox: list[SpeechClip],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = librivox[2]
    wav = pcm16_wav(clip.pcm, clip.sample_rate)
    key = raw_input_key(uuid.uuid4(), uuid.uuid4(), NOW)
    legacy_key = voice_profile_key(uuid.uuid4())

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack, fresh_database(postgres_server) as url:
            for name, value in {
                "AVATAR_DATA_DIR": str(tmp_path / "var"),
                "AVATAR_DATABASE__PLACEMENT": "remote",
                "AVATAR_DATABASE__URL": url,
                "AVATAR_OBJECT_STORE__ROOT": str(tmp_path / "objects"),
            }.items():
                monkeypatch.setenv(name, value)
            await _write_conversation(Settings(_env_file=None), clip)
            serving = await stack.enter_async_context(_store(Settings(_env_file=None)))  # a live server's
            await serving.put(key, wav, "audio/wav")
            await serving.inner.put(legacy_key, wav)  # written before encryption existed
            before = _key_ids(await _raw_columns(url), tmp_path / "objects" / "raw_inputs")
            assert len(before) == 1
            engine = create_async_engine(url)  # and a row written before encryption existed
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE conversation_turns SET ai_response = 'a legacy reply'"))
            await engine.dispose()

            result = await asyncio.to_thread(CliRunner().invoke, cli.main, ["keys", "rotate"])
            assert result.exit_code == 0, result.output
            keyring = json.loads((tmp_path / "var" / "secrets" / MASTER_FILE).read_text())
            assert keyring["active"] in result.output and len(keyring["keys"]) == 2
            after = _key_ids(await _raw_columns(url), tmp_path / "objects")
            assert after == {keyring["active"]}  # every object and value, the legacy one included
            # The server that was running during the rotation seals new audio under the new key.
            fresh = raw_input_key(uuid.uuid4(), uuid.uuid4(), NOW)
            await serving.put(fresh, wav, "audio/wav")
            assert Envelope.key_id_of((tmp_path / "objects" / fresh).read_bytes()) == keyring["active"]
            assert await serving.get(key) == wav

            # The old master key can now be destroyed: everything still opens with the new one.
            keyring["keys"] = {keyring["active"]: keyring["keys"][keyring["active"]]}
            (tmp_path / "var" / "secrets" / MASTER_FILE).write_text(json.dumps(keyring))
            async with _store(Settings(_env_file=None)) as store:
                assert await store.get(key) == wav
                assert await store.get(legacy_key) == wav
                _assert_not_audio((tmp_path / "objects" / legacy_key).read_bytes(), clip)
            await _write_conversation(Settings(_env_file=None), clip)  # reads back what is there

            again = await asyncio.to_thread(CliRunner().invoke, cli.main, ["keys", "rotate", "--rewrap-only"])
            assert again.exit_code == 0, again.output
            assert "0 re-wrapped, 0 sealed" in again.output  # idempotent

    asyncio.run(scenario())
