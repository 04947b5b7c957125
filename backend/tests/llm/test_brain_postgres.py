"""The brain over the real stack it persists to: llama.cpp + SmolLM2, the multilingual USE
encoder and PostgreSQL 16 + pgvector (summaries and long-term memories survive a restart)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from avatar.application.brain import BrainConfig, BrainDeps, ConversationBrain, ReplyEnded, load_persona
from avatar.application.ports.llm import TextEmbedder
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.domain.models import ConversationTurn, Session
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.infrastructure.embedding import build_text_embedder
from avatar.infrastructure.llm import OpenAIChatModel, embedded_model_path, gguf_tokenizer
from avatar.settings import REPO_ROOT, Placement, Settings
from tests.support.auth import seed_owner

pytestmark = pytest.mark.slow

PERSONA = load_persona(REPO_ROOT / "config" / "persona.toml")
CONFIG = BrainConfig(
    context_tokens=2048,
    max_reply_tokens=32,
    history_keep_tokens=100,
    summarize_at_tokens=160,
    summary_max_tokens=48,
    memory_top_k=2,
)


@pytest.fixture
async def stack(module_database_url: str) -> AsyncIterator[tuple[UnitOfWorkFactory, TextEmbedder]]:
    settings = Settings()
    settings.database.placement = Placement.REMOTE
    settings.database.url = SecretStr(module_database_url)
    async with contextlib.AsyncExitStack() as exits:
        uow = await build_unit_of_work_factory(settings, exits)
        embedder = await build_text_embedder(settings, exits)
        yield uow, embedder


async def _turn(brain: ConversationBrain, uow: UnitOfWorkFactory, text: str) -> ReplyEnded:
    end = None
    async for event in brain.reply(text):
        if isinstance(event, ReplyEnded):
            end = event
    assert end is not None and end.error is None
    # What the conversation pipeline does after each reply: store the turn.
    async with uow() as tx:
        await tx.turns.add(
            ConversationTurn(uuid.uuid4(), brain.session_id, end.turn_number, text, end.text, end.emotion)
        )
        await tx.commit()
    await brain.wait_idle()
    return end


async def test_summary_and_memories_persist_in_postgres_and_survive_a_restart(
    llama_server: str, stack: tuple[UnitOfWorkFactory, TextEmbedder]
) -> None:
    uow, embedder = stack
    chat = OpenAIChatModel(
        llama_server, "smollm2-135m-instruct", tokenizer=gguf_tokenizer(embedded_model_path(Settings()))
    )
    session = Session.start(datetime.now(UTC), owner_id=await seed_owner(uow))
    async with uow() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    try:
        brain = ConversationBrain(session.session_id, BrainDeps(chat, embedder, uow, PERSONA, CONFIG))
        for text in (
            "My cat is called Tofu and she sleeps all day.",
            "I work as a nurse at night.",
            "My favourite food is spicy ramen.",
            "Tell me something nice.",
        ):
            await _turn(brain, uow, text)
        assert brain.summaries_written >= 1

        async with uow() as tx:
            stored = await tx.summaries.load(session.session_id)
        assert stored == (brain.summary, brain.covered_turns)

        # Long-term memory across languages, through pgvector: a Korean question finds the cat.
        [query] = await embedder.embed(["내 고양이 이름이 뭐였지?"])
        async with uow() as tx:
            hits = await tx.memories.search(query, limit=3, session_id=session.session_id)
        assert hits and "Tofu" in hits[0].text

        restarted = await ConversationBrain.restore(
            session.session_id, BrainDeps(chat, embedder, uow, PERSONA, CONFIG)
        )
        assert restarted.summary == brain.summary and restarted.covered_turns == brain.covered_turns
        assert [t.number for t in restarted.history] == [t.number for t in brain.history]
        end = await _turn(restarted, uow, "What is my cat called?")
        assert end.turn_number == 5
        await restarted.aclose()
        await brain.aclose()
    finally:
        await chat.aclose()
