"""Deleting a person's data (docs/security.md, "Delete my data") against real PostgreSQL + pgvector,
a real S3 server and Redis: conversations held through the real app and socket, then
``DELETE /api/v1/me/data``, per-session delete and the admin's ``DELETE /api/v1/users/{id}``; every
table, every object and every Redis key is scanned afterwards for anything of that person."""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from avatar.application.erasure import DataEraser
from avatar.bootstrap import Container
from avatar.domain.models import VoiceProfile, new_id
from avatar.infrastructure.database import SqlUnitOfWorkFactory, create_engine, migrate
from avatar.infrastructure.object_store import build_object_store
from avatar.infrastructure.queue import redis_client
from avatar.infrastructure.session_state import RedisSessionStateStore
from avatar.presentation.app import create_app
from avatar.settings import ObjectStoreSettings, Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.auth import bearer, make_user
from tests.support.servers import S3Server


def _tone(ms: int, sr: int = 16000) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 220 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


@dataclass
class Rig:
    base: str
    container: Container
    engine_url: str
    redis: Any
    namespace: str
    bucket_dir: Any


@pytest_asyncio.fixture
async def rig(
    module_database_url: str, s3_server: S3Server, redis_url: str, redis_namespace: str
) -> AsyncIterator[Rig]:
    bucket = f"erase-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        _env_file=None,
        environment="test",
        object_store=ObjectStoreSettings(
            kind="s3",
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=bucket,
        ),
    )
    settings.security.reconnect_grace_s = 30
    async with contextlib.AsyncExitStack() as exits:
        engine = create_engine(module_database_url, pool_size=4)
        exits.push_async_callback(engine.dispose)
        await migrate.upgrade(engine)
        redis = redis_client(redis_url)
        exits.push_async_callback(redis.aclose)
        container = fake_container(
            settings,
            uow=SqlUnitOfWorkFactory(engine),
            object_store=await build_object_store(settings, exits),
            session_state=RedisSessionStateStore(redis, namespace=redis_namespace),
            recognizer=FakeRecognizer(("my secret is blue tulips",), utterance_ms=400, silence_rms=200.0),
            chat_model=FakeChatModel(("[happy] Blue tulips, noted.",)),
        )
        await container.queue.start()
        async with running_server(create_app(settings, container)) as base:
            yield Rig(base, container, module_database_url, redis, redis_namespace, s3_server.root / bucket)


async def _converse(rig: Rig, key: str, turns: int = 2) -> str:
    """A real conversation over the socket: spoken turns (raw audio stored), replies, HQ audio,
    prosody and, from the third turn on, memories (a turn is remembered once the next one settled
    it); returns the session id."""
    created = await create_session(rig.base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "set_tts_mode", "mode": "hq"})
        for _ in range(turns):
            await client.send_audio(_tone(500))
            done = await client.until_type("turn_completed", timeout_s=30)
            assert not done["interrupted"] and done["text"]
            # Speak again only once the reply has played out (by the container's fake clock),
            # else the next words barge in on it.
            rig.container.clock.advance(30.0)  # type: ignore[attr-defined]
    sid = str(created["session_id"])
    await _settle(rig, sid, turns)
    return sid


async def _settle(rig: Rig, sid: str, turns: int) -> None:
    """Wait for the background writes (turn rows, HQ audio, prosody, memories)."""
    queue = rig.container.queue
    for _ in range(200):
        await queue.drain()  # type: ignore[attr-defined]
        counts = await _counts(rig, sid)
        if (
            counts["turns"] >= turns
            and counts["hq"] >= 1
            and (turns < 3 or counts["memories"] >= 1)
            and counts["prosody"] >= turns
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{turns} turns were not recorded: {await _counts(rig, sid)}")


async def _counts(rig: Rig, sid: str) -> dict[str, int]:
    engine = create_engine(rig.engine_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            one = {"sid": uuid.UUID(sid)}
            turns = "SELECT turn_id FROM conversation_turns WHERE session_id = :sid"
            return {
                "turns": (await conn.execute(text(f"SELECT count(*) FROM ({turns}) t"), one)).scalar_one(),
                "hq": (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM synthesized_audios"
                            f" WHERE mode = 'hq' AND turn_id IN ({turns})"
                        ),
                        one,
                    )
                ).scalar_one(),
                "memories": (
                    await conn.execute(text("SELECT count(*) FROM memories WHERE session_id = :sid"), one)
                ).scalar_one(),
                "prosody": (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM prosody_scores WHERE transcription_id IN "
                            f"(SELECT transcription_id FROM transcriptions WHERE turn_id IN ({turns}))"
                        ),
                        one,
                    )
                ).scalar_one(),
            }
    finally:
        await engine.dispose()


async def _add_profile_and_summary(rig: Rig, owner: uuid.UUID, sid: str) -> str:
    store = rig.container.object_store
    pid = new_id()
    url = await store.put(f"voice_profiles/{pid}/original.wav", b"RIFF-not-really", "audio/wav")
    await store.put(f"voice_profiles/{pid}/metadata.json", b"{}", "application/json")
    vec = [0.0] * 256
    vec[0] = 1.0
    async with rig.container.uow() as tx:
        await tx.voice_profiles.add(
            VoiceProfile(
                profile_id=pid,
                name="mine",
                audio_url=url,
                embedding=tuple(vec),
                duration_sec=6.0,
                sample_rate=16000,
                user_id=owner,
            )
        )
        await tx.summaries.save(uuid.UUID(sid), "They said their secret is blue tulips.", 2)
        await tx.commit()
    return str(pid)


async def _traces(rig: Rig, marks: set[str]) -> dict[str, list[str]]:
    """Every table row, object key and Redis key that mentions any of ``marks``."""
    found: dict[str, list[str]] = {}
    engine = create_engine(rig.engine_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tables = [
                r[0]
                for r in await conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'system_logs'"
                    )
                )
            ]
            for table in tables:
                rows = await conn.execute(text(f'SELECT t::text FROM "{table}" t'))
                hits = [row[0] for row in rows if any(m in row[0] for m in marks)]
                if hits:
                    found[f"table {table}"] = hits
    finally:
        await engine.dispose()
    keys = [str(p.relative_to(rig.bucket_dir)) for p in rig.bucket_dir.rglob("*") if p.is_file()]
    listed = await rig.container.object_store.list_keys("")
    hits = [k for k in {*keys, *listed} if any(m in k for m in marks)]
    if hits:
        found["objects"] = hits
    redis_keys = [k.decode() async for k in rig.redis.scan_iter(match=f"{rig.namespace}:*")]
    redis_hits = [k for k in redis_keys if any(m in k for m in marks)]
    for k in redis_keys:
        value = await rig.redis.get(k)
        if value is not None and any(m.encode() in value for m in marks):
            redis_hits.append(k)
    if redis_hits:
        found["redis"] = redis_hits
    return found


async def _marks_of(rig: Rig, user_id: uuid.UUID) -> set[str]:
    """The ids that identify a user's data: theirs, their sessions', turns', transcriptions', profiles'."""
    marks = {str(user_id)}
    engine = create_engine(rig.engine_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            uid = {"uid": user_id}
            for query in (
                "SELECT session_id FROM sessions WHERE owner_id = :uid",
                "SELECT turn_id FROM conversation_turns WHERE session_id IN "
                "(SELECT session_id FROM sessions WHERE owner_id = :uid)",
                "SELECT transcription_id FROM transcriptions WHERE turn_id IN (SELECT turn_id FROM "
                "conversation_turns WHERE session_id IN "
                "(SELECT session_id FROM sessions WHERE owner_id = :uid))",
                "SELECT profile_id FROM voice_profiles WHERE user_id = :uid",
            ):
                marks.update(str(r[0]) for r in await conn.execute(text(query), uid))
    finally:
        await engine.dispose()
    return marks


async def test_delete_my_data_leaves_nothing_of_mine_and_keeps_everyone_else(rig: Rig) -> None:
    alice, alice_key = await make_user(rig.container, f"alice-{uuid.uuid4().hex[:6]}")
    bob, bob_key = await make_user(rig.container, f"bob-{uuid.uuid4().hex[:6]}")
    first = await _converse(rig, alice_key, turns=3)
    await _converse(rig, alice_key, turns=1)
    await _add_profile_and_summary(rig, alice.user_id, first)
    theirs = await _converse(rig, bob_key, turns=1)
    alice_marks = await _marks_of(rig, alice.user_id)
    bob_marks = await _marks_of(rig, bob.user_id)
    before = await _traces(rig, alice_marks)
    assert {"objects", "table sessions", "table memories", "table prosody_scores", "redis"} <= set(before)
    assert any("raw_inputs/" in k for k in before["objects"]) and any(
        "synthesized/hq/" in k for k in before["objects"]
    )

    async with httpx.AsyncClient(base_url=rig.base, headers=bearer(alice_key)) as http:
        # Without a credential, or with CSRF-less cookies, nothing is deleted.
        assert (await http.delete("/api/v1/me/data", headers={"Authorization": ""})).status_code == 401
        assert await _traces(rig, alice_marks) == before
        removed = await http.delete("/api/v1/me/data")
        assert removed.status_code == 200, removed.text
        report = removed.json()
        assert len(report["sessions"]) == 2 and len(report["voice_profiles"]) == 1
        assert report["rows"]["turns"] >= 3 and report["rows"]["memories"] >= 3
        assert report["rows"]["prosody"] >= 3 and report["rows"]["summaries"] == 1
        assert report["objects"] >= 3 + 3 + 1 + 2  # raw inputs, fast and HQ replies, profile files
        assert report["account_deleted"] is False
        # The account stays and still works; its data is gone everywhere.
        assert (await http.get("/api/v1/me")).json()["name"] == alice.name
        assert (await http.get("/api/v1/sessions")).json()["sessions"] == []
        assert (await http.get(f"/api/v1/sessions/{first}")).status_code == 404
        again = (await http.delete("/api/v1/me/data")).json()
        assert again["rows"] == {} and again["objects"] == 0 and again["sessions"] == []
    left = await _traces(rig, alice_marks - {str(alice.user_id)})
    assert left == {}, left
    # Bob's conversation is untouched.
    assert set(await _traces(rig, bob_marks)) >= {"objects", "table sessions", "table prosody_scores"}
    async with httpx.AsyncClient(base_url=rig.base, headers=bearer(bob_key)) as http:
        turns = (await http.get(f"/api/v1/sessions/{theirs}/turns")).json()["turns"]
        assert len(turns) == 1 and turns[0]["audio"]


async def test_per_session_delete_and_admin_user_delete(rig: Rig) -> None:
    admin, admin_key = await make_user(rig.container, f"admin-{uuid.uuid4().hex[:6]}", admin=True)
    carol, carol_key = await make_user(rig.container, f"carol-{uuid.uuid4().hex[:6]}")
    _dave, dave_key = await make_user(rig.container, f"dave-{uuid.uuid4().hex[:6]}")
    gone = await _converse(rig, carol_key, turns=1)
    kept = await _converse(rig, carol_key, turns=1)
    gone_marks = await _marks_of(rig, carol.user_id)
    async with httpx.AsyncClient(base_url=rig.base) as http:
        # Somebody else's session: 404, exactly like one that does not exist; nothing is removed.
        foreign = await http.delete(f"/api/v1/sessions/{gone}", headers=bearer(dave_key))
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "SESSION_NOT_FOUND"
        assert (
            await http.delete(f"/api/v1/sessions/{uuid.uuid4()}", headers=bearer(carol_key))
        ).status_code == 404
        assert (await http.delete("/api/v1/sessions/nope", headers=bearer(carol_key))).status_code == 422
        deleted = await http.delete(f"/api/v1/sessions/{gone}", headers=bearer(carol_key))
        assert deleted.status_code == 200 and deleted.json()["sessions"] == [gone]
        assert deleted.json()["rows"]["turns"] >= 1
        assert (await http.delete(f"/api/v1/sessions/{gone}", headers=bearer(carol_key))).status_code == 404
        listed = (await http.get("/api/v1/sessions", headers=bearer(carol_key))).json()["sessions"]
        assert [s["session_id"] for s in listed] == [kept]

        # Only an admin deletes a user; the user's key stops working; it is audited.
        not_admin = await http.delete(f"/api/v1/users/{carol.user_id}", headers=bearer(dave_key))
        assert not_admin.status_code == 403 and not_admin.json()["error"]["code"] == "ADMIN_ONLY"
        removed = await http.delete(f"/api/v1/users/{carol.user_id}", headers=bearer(admin_key))
        assert removed.status_code == 200, removed.text
        assert removed.json()["account_deleted"] is True and removed.json()["sessions"] == [kept]
        assert (await http.get("/api/v1/me", headers=bearer(carol_key))).status_code == 401
        assert (
            await http.delete(f"/api/v1/users/{carol.user_id}", headers=bearer(admin_key))
        ).status_code == 404
        audit = (await http.get("/api/v1/audit", headers=bearer(admin_key))).json()["entries"]
        assert any(e["action"] == "user.delete" and e["target"] == str(carol.user_id) for e in audit)
        assert all(e["actor_id"] == str(admin.user_id) for e in audit if e["action"] == "user.delete")
    everything = gone_marks | await _marks_of(rig, carol.user_id) | {kept}
    assert await _traces(rig, everything) == {}


class _FailingDeletes:
    """The real object store, failing every delete after the first ``budget``: an erasure cut short."""

    def __init__(self, store: Any, budget: int) -> None:
        self._store = store
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def delete(self, key: str) -> None:
        if self.budget <= 0:
            raise ConnectionError("object store went away")
        self.budget -= 1
        await self._store.delete(key)


async def test_an_interrupted_erasure_resumes_to_completion(rig: Rig) -> None:
    erin, erin_key = await make_user(rig.container, f"erin-{uuid.uuid4().hex[:6]}")
    await _converse(rig, erin_key, turns=3)
    marks = await _marks_of(rig, erin.user_id)
    flaky = _FailingDeletes(rig.container.object_store, budget=2)
    eraser = DataEraser(rig.container.uow, flaky)
    with pytest.raises(ConnectionError):
        await eraser.erase_user(erin.user_id, delete_account=False)
    # Cut short: the rows are all still there (objects go first), so the rest can be found again.
    assert "table sessions" in await _traces(rig, marks)
    flaky.budget = 1000
    report = await eraser.erase_user(erin.user_id, delete_account=False)
    assert report.rows["sessions"] == 1 and report.objects >= 4
    left = await _traces(rig, marks - {str(erin.user_id)})
    # The Redis session state is the session manager's to drop; this eraser was built without it.
    left.pop("redis", None)
    assert left == {}, left
