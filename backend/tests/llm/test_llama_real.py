"""The brain over the real llama.cpp server with the packaged SmolLM2-135M model.

The model is tiny and English-only: these tests check properties (tokens stream, the emotion is
known before any text, no markup leaks, history and summaries persist), never content quality.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from avatar.application.brain import (
    BrainConfig,
    BrainDeps,
    ConversationBrain,
    EmotionDecided,
    ModelStarted,
    ReplyEnded,
    TextDelta,
    load_persona,
)
from avatar.application.ports.llm import ChatMessage
from avatar.domain.models import ConversationTurn, Emotion
from avatar.infrastructure.llm import OpenAIChatModel, embedded_model_path, gguf_tokenizer
from avatar.settings import REPO_ROOT, Settings
from tests.fakes import FakeDatabase, FakeTextEmbedder

pytestmark = pytest.mark.slow

PERSONA = load_persona(REPO_ROOT / "config" / "persona.toml")
CONFIG = BrainConfig(
    context_tokens=2048,
    max_reply_tokens=40,
    history_keep_tokens=120,
    summarize_at_tokens=200,
    summary_max_tokens=60,
    memory_top_k=0,
)


@pytest.fixture
async def chat(llama_server: str) -> AsyncIterator[OpenAIChatModel]:
    model = OpenAIChatModel(
        llama_server, "smollm2-135m-instruct", tokenizer=gguf_tokenizer(embedded_model_path(Settings()))
    )
    yield model
    await model.aclose()


async def test_server_streams_tokens_and_counts_with_its_tokenizer(chat: OpenAIChatModel) -> None:
    tokens = [t async for t in chat.stream_chat([ChatMessage("user", "Say hello.")], max_tokens=16)]
    assert len(tokens) > 1 and "".join(tokens).strip()
    assert chat.exact_tokens and chat.count_tokens("Hello world") == 2
    assert (await chat.health()).ok


async def turn(brain: ConversationBrain, db: FakeDatabase, text: str) -> ReplyEnded:
    seen: list[object] = []
    async for event in brain.reply(text):
        seen.append(event)
    assert isinstance(seen[0], ModelStarted)  # the real model's first token is reported
    assert isinstance(seen[1], EmotionDecided)  # known before any text
    assert sum(isinstance(e, EmotionDecided) for e in seen) == 1
    end = seen[-1]
    assert isinstance(end, ReplyEnded) and end.error is None
    text_out = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text_out.strip() == end.text
    for raw in ("[" + e.value + "]" for e in Emotion):
        assert raw not in text_out.lower()
    assert "<think" not in text_out
    async with db() as tx:
        await tx.turns.add(
            ConversationTurn(uuid.uuid4(), brain.session_id, end.turn_number, text, end.text, end.emotion)
        )
        await tx.commit()
    return end


async def test_replies_stream_with_emotion_summary_and_restart(chat: OpenAIChatModel) -> None:
    db = FakeDatabase()
    brain = ConversationBrain(uuid.uuid4(), BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, CONFIG))
    for text in (
        "Hi Hana! My name is Mina and I love painting.",
        "I have a cat called Tofu.",
        "Yesterday I painted a sunset by the sea.",
        "What do you like to do?",
    ):
        end = await turn(brain, db, text)
        assert end.text
        await brain.wait_idle()
    assert brain.summaries_written >= 1 and brain.summary
    assert db.tables.summaries[brain.session_id] == (brain.summary, brain.covered_turns)

    restarted = await ConversationBrain.restore(
        brain.session_id, BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, CONFIG)
    )
    assert restarted.summary == brain.summary
    window = [(t.number, t.assistant) for t in brain.history]
    assert [(t.number, t.assistant) for t in restarted.history] == window
    end = await turn(restarted, db, "Do you remember my cat?")
    assert end.turn_number == 5


async def test_barge_in_history_over_the_real_model(chat: OpenAIChatModel) -> None:
    brain = ConversationBrain(
        uuid.uuid4(), BrainDeps(chat, FakeTextEmbedder(), FakeDatabase(), PERSONA, CONFIG)
    )
    stream = brain.reply("Tell me a long story about a dragon.")
    heard = ""
    async for event in stream:
        if isinstance(event, TextDelta):
            heard += event.text
            if len(heard.split()) >= 3:
                break
    await stream.aclose()
    brain.record_interrupted(heard + "...")
    assert brain.history[-1].assistant == heard.strip().rstrip(".,")
    assert not brain.history[-1].assistant.endswith((".", "…"))
