"""Long-term memory with the real multilingual USE encoder: a Korean query finds an English memory,
through the brain's prompt and through ``GET /api/v1/memory/search``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from avatar.application.brain import BrainDeps, ConversationBrain, ReplyEnded, load_persona
from avatar.domain.models import Session
from avatar.infrastructure.embedding import UseTextEmbedder
from avatar.presentation.app import create_app
from avatar.settings import REPO_ROOT, Settings
from tests.fakes import FakeChatModel, FakeDatabase, fake_container
from tests.support.auth import bearer, make_user

pytestmark = pytest.mark.slow

PERSONA = load_persona(REPO_ROOT / "config" / "persona.toml")
MEMORIES = [
    "My favourite food is spicy rice cakes.",
    "I am learning to play the violin.",
    "My sister lives in Canada.",
    "The weather was rainy all week.",
]


@pytest.fixture(scope="module")
def embedder() -> UseTextEmbedder:
    return UseTextEmbedder()


async def test_embeddings_are_unit_vectors_of_512(embedder: UseTextEmbedder) -> None:
    vectors = await embedder.embed(["hello", "안녕하세요", ""])
    assert embedder.dim == 512 and [len(v) for v in vectors] == [512, 512, 512]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3


async def test_korean_query_recalls_english_memory_into_the_prompt(embedder: UseTextEmbedder) -> None:
    db = FakeDatabase()
    chat = FakeChatModel(["[happy] Nice!"])
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    sessions = [Session.start(datetime.now(UTC), owner_id=o) for o in (owner, owner, stranger)]
    async with db() as tx:
        for record in sessions:
            await tx.sessions.add(record)
        await tx.commit()
    past = ConversationBrain(sessions[0].session_id, BrainDeps(chat, embedder, db, PERSONA))
    for text in MEMORIES:
        [_ async for _ in past.reply(text)]
    await past.aclose()
    assert len(db.tables.memories) == 2 * len(MEMORIES)

    now = ConversationBrain(sessions[1].session_id, BrainDeps(chat, embedder, db, PERSONA))
    events = [e async for e in now.reply("내가 제일 좋아하는 음식이 뭐였지?")]  # what was my favourite food?
    assert isinstance(events[-1], ReplyEnded)
    system = chat.calls[-1][-2].content  # the recalled memories come right before the question
    first_memory = system.split("earlier conversations:\n")[1].split("\n")[0]
    assert "spicy rice cakes" in first_memory

    # Another person's conversation never recalls them (docs/security.md).
    theirs = ConversationBrain(sessions[2].session_id, BrainDeps(chat, embedder, db, PERSONA))
    [_ async for _ in theirs.reply("내가 제일 좋아하는 음식이 뭐였지?")]
    assert not any(m in chat.calls[-1][0].content for m in MEMORIES)


async def test_memory_search_endpoint(embedder: UseTextEmbedder) -> None:
    db = FakeDatabase()
    container = fake_container(text_embedder=embedder, uow=db)
    user, key = await make_user(container)
    _stranger, stranger_key = await make_user(container, "stranger")
    session = Session.start(datetime.now(UTC), owner_id=user.user_id)
    session_id = session.session_id
    vectors = await embedder.embed(MEMORIES)
    async with db() as tx:
        await tx.sessions.add(session)
        for text, vector in zip(MEMORIES, vectors, strict=True):
            await tx.memories.add(session_id, None, "user", text, vector)
        await tx.commit()
    app = create_app(Settings(), container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=bearer(key)
        ) as client:
            found = await client.get("/api/v1/memory/search", params={"q": "바이올린 연습", "limit": 2})
            assert found.status_code == 200
            hits = found.json()["hits"]
            assert len(hits) == 2 and hits[0]["text"] == "I am learning to play the violin."
            assert hits[0]["score"] >= hits[1]["score"]
            mine = await client.get(
                "/api/v1/memory/search", params={"q": "violin", "session_id": str(session_id)}
            )
            assert mine.json()["hits"][0]["text"] == "I am learning to play the violin."
            # Nobody else finds these memories: not by meaning, not by naming the session.
            theirs = await client.get(
                "/api/v1/memory/search", params={"q": "violin"}, headers=bearer(stranger_key)
            )
            assert theirs.status_code == 200 and theirs.json()["hits"] == []
            named = await client.get(
                "/api/v1/memory/search",
                params={"q": "violin", "session_id": str(session_id)},
                headers=bearer(stranger_key),
            )
            assert named.status_code == 404 and named.json()["error"]["code"] == "SESSION_NOT_FOUND"
            other = await client.get(
                "/api/v1/memory/search", params={"q": "violin", "session_id": str(uuid.uuid4())}
            )
            assert other.status_code == 404
            anonymous = await client.get(
                "/api/v1/memory/search", params={"q": "violin"}, headers={"Authorization": ""}
            )
            assert anonymous.status_code == 401
            bad_params: list[dict[str, str | int]] = [
                {"q": ""},
                {"q": "x", "limit": 0},
                {"q": "x", "session_id": "nope"},
                {"q": "  "},
            ]
            for params in bad_params:
                bad = await client.get("/api/v1/memory/search", params=params)
                assert bad.status_code == 422
                assert bad.json()["error"]["code"] == "INVALID_INPUT"
