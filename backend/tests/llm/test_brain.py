"""The conversation brain with fakes of its ports: events, fallback, barge-in, summaries, memory."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from avatar.application.brain import (
    BrainConfig,
    BrainDeps,
    BrainEvent,
    ConversationBrain,
    EmotionDecided,
    HistoryFold,
    ModelStarted,
    ReplyEnded,
    TextDelta,
    load_persona,
    parse_persona,
)
from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModelError
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import ConversationTurn, Emotion, Session
from avatar.settings import REPO_ROOT
from tests.fakes import FakeChatModel, FakeDatabase, FakeTextEmbedder

PERSONA = load_persona(REPO_ROOT / "config" / "persona.toml")
TINY = BrainConfig(
    context_tokens=2048,
    max_reply_tokens=64,
    history_keep_tokens=60,
    summarize_at_tokens=100,
    memory_top_k=2,
    memory_min_score=0.1,
)


def make(
    chat: FakeChatModel, db: FakeDatabase, config: BrainConfig = TINY, session_id: uuid.UUID | None = None
) -> ConversationBrain:
    return ConversationBrain(
        session_id or uuid.uuid4(), BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, config)
    )


async def owned(
    chat: FakeChatModel, db: FakeDatabase, owner: uuid.UUID, config: BrainConfig = TINY
) -> ConversationBrain:
    """A brain whose session is stored with ``owner`` (recall searches only the owner's memories)."""
    session = dataclasses.replace(Session.start(datetime.now(UTC)), owner_id=owner)
    async with db() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    return make(chat, db, config, session.session_id)


async def converse(brain: ConversationBrain, db: FakeDatabase, text: str) -> list[BrainEvent]:
    """Play the conversation pipeline: stream the reply and persist the turn."""
    events = [e async for e in brain.reply(text)]
    end = events[-1]
    assert isinstance(end, ReplyEnded)
    async with db() as tx:
        await tx.turns.add(
            ConversationTurn(uuid.uuid4(), brain.session_id, end.turn_number, text, end.text, end.emotion)
        )
        await tx.commit()
    return events


async def test_emotion_comes_first_then_clean_text_then_end() -> None:
    chat = FakeChatModel(["[excited] Wow, that is amazing news!"])
    events = await converse(make(chat, FakeDatabase()), FakeDatabase(), "I got the job!")
    assert events[0] == ModelStarted() and events[1] == EmotionDecided(Emotion.EXCITED)
    assert all(isinstance(e, TextDelta) for e in events[2:-1]) and len(events) > 4
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Wow, that is amazing news!"
    assert events[-1] == ReplyEnded(text, Emotion.EXCITED, 1)
    system, *rest = chat.calls[0]
    assert system.role == "system" and "Hana" in system.content and "[happy]" in system.content
    assert rest[-1].content == "I got the job!"
    assert any(m.role == "assistant" and m.content.startswith("[") for m in rest)  # few-shot examples


async def test_fallback_reply_when_model_is_down_in_users_language() -> None:
    chat = FakeChatModel(fail_with=ChatModelError(ChatErrorKind.REFUSED, "connection refused"))
    events = [e async for e in make(chat, FakeDatabase()).reply("안녕, 오늘 기분 어때?")]
    assert events[0] == EmotionDecided(Emotion.SAD)  # the model never started: no ModelStarted
    end = events[-1]
    assert isinstance(end, ReplyEnded) and end.fallback and end.error is ChatErrorKind.REFUSED
    assert end.text.startswith("미안해요") and "[" not in end.text


async def test_the_model_start_is_reported_before_a_tagless_reply_releases_its_first_clause() -> None:
    """Without an emotion tag the parser holds the text until its first clause is complete (to guess
    the emotion from it); the model's first token is still reported when it arrives (``llm_ttft``)."""
    chat = FakeChatModel(["Well then, nice to meet you."])
    events = [e async for e in make(chat, FakeDatabase()).reply("Hello!")]
    assert [type(e) for e in events[:3]] == [ModelStarted, EmotionDecided, TextDelta]
    assert sum(isinstance(e, ModelStarted) for e in events) == 1
    first = events[2]
    assert isinstance(first, TextDelta) and first.text.startswith("Well then,")  # several tokens held


@pytest.mark.parametrize("raw", ["[happy]", "[excited] <think>plan the answer</think>", "   "])
async def test_a_reply_with_nothing_speakable_falls_back_instead_of_silence(raw: str) -> None:
    brain = make(FakeChatModel([raw]), FakeDatabase())
    events = [e async for e in brain.reply("Hello!")]
    assert sum(isinstance(e, EmotionDecided) for e in events) == 1
    end = events[-1]
    assert isinstance(end, ReplyEnded) and end.fallback and end.error is None
    spoken = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert spoken == end.text and end.text and "[" not in end.text and "think" not in end.text
    # the listener heard the fallback, but the window does not present it as the model's words
    assert brain.history[-1].user == "Hello!" and brain.history[-1].assistant == ""


async def test_the_fallback_never_enters_the_history_the_model_is_prompted_with() -> None:
    down = ChatModelError(ChatErrorKind.REFUSED, "connection refused")
    chat = FakeChatModel(["[happy] Back again, nice to hear you."], fail_with=down)
    db = FakeDatabase()
    brain = make(chat, db)
    apologies = []
    for text in ("Hi there!", "Are you there?"):
        end = (await converse(brain, db, text))[-1]
        assert isinstance(end, ReplyEnded) and end.fallback
        apologies.append(end.text)
    brain.record_interrupted(apologies[-1][:12] + "...")  # barge-in over the fallback
    chat.fail_with = None  # the model is back
    events = await converse(brain, db, "Now?")
    assert not events[-1].fallback  # type: ignore[union-attr]
    prompt = chat.calls[-1]
    assert [m.content for m in prompt if m.role == "user"][-3:] == ["Hi there!", "Are you there?", "Now?"]
    assert not any(apologies[0][:20] in m.content for m in prompt)
    # a brain restored from the stored turns (which keep what was heard) leaves it out as well
    deps = BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, TINY)
    restored = await ConversationBrain.restore(brain.session_id, deps)
    window = [(t.user, t.assistant) for t in restored.history]
    assert window[:2] == [("Hi there!", ""), ("Are you there?", "")]
    assert restored.history[2].assistant == "Back again, nice to hear you."
    await brain.wait_idle()
    remembered = [m[3] for m in db.tables.memories]
    assert "Hi there!" in remembered and apologies[0] not in remembered


async def test_korean_user_gets_a_reply_in_korean_instruction() -> None:
    chat = FakeChatModel()
    [_ async for _ in make(chat, FakeDatabase()).reply("안녕하세요")]
    assert "reply in Korean" in chat.calls[0][0].content


async def test_barge_in_keeps_only_what_was_heard() -> None:
    chat = FakeChatModel(
        ["[happy] Hello there, let me tell you a very long story about dragons.", "[neutral] Sure."]
    )
    db = FakeDatabase()
    brain = make(chat, db)
    stream = brain.reply("Tell me a story")
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()  # the user started speaking
    assert chat.cancelled == 1
    brain.record_interrupted("Hello there, let me…")
    assert brain.history[-1].assistant == "Hello there, let me"
    [_ async for _ in brain.reply("Actually, never mind")]
    sent = chat.calls[-1]
    heard = ["Tell me a story", "Hello there, let me", "Actually, never mind"]
    assert [m.content for m in sent[-3:]] == heard


async def test_barge_in_after_the_stream_ended_replaces_the_full_reply() -> None:
    chat = FakeChatModel(["[happy] One. Two. Three. Four."])
    brain = make(chat, FakeDatabase())
    [_ async for _ in brain.reply("Count")]
    brain.record_interrupted("One. Two...")
    assert brain.history[-1].assistant == "One. Two"


async def test_summary_in_background_persisted_and_restored() -> None:
    chat = FakeChatModel(["[happy] That sounds lovely, tell me more about it please!"])
    db = FakeDatabase()
    # Room for one turn with its recalled memories (they stay in the window with their turn).
    config = dataclasses.replace(TINY, history_keep_tokens=100, summarize_at_tokens=160)
    brain = make(chat, db, config)
    for i in range(6):
        await converse(brain, db, f"Message number {i}: my dog Biscuit likes long walks in the park.")
        await brain.wait_idle()  # the user pauses between turns: the summary runs then
        assert brain.history_tokens() < config.summarize_at_tokens  # the window keeps sliding
    assert brain.summaries_written >= 1
    saved = db.tables.summaries[brain.session_id]
    assert saved == (brain.summary, brain.covered_turns) and brain.covered_turns >= 1
    assert all(t.number > brain.covered_turns for t in brain.history)

    again = await ConversationBrain.restore(
        brain.session_id, BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, config)
    )
    assert again.summary == brain.summary
    assert [t.number for t in again.history] == [t.number for t in brain.history]
    [_ async for _ in again.reply("What is my dog's name?")]
    assert brain.summary in chat.calls[-1][0].content
    assert again.history[-1].number == 7


async def test_after_a_summary_the_new_prompt_head_is_computed_before_the_next_reply() -> None:
    """The fold puts the summary into the system message, so the server's cached prompt no longer
    matches; the brain has the new head (summary, examples, kept history) computed right away."""
    chat = FakeChatModel(["[happy] That sounds lovely, tell me more about it please!"])
    db = FakeDatabase()
    config = dataclasses.replace(TINY, history_keep_tokens=100, summarize_at_tokens=160)
    brain = make(chat, db, config)
    for i in range(6):
        await converse(brain, db, f"Message number {i}: my dog Biscuit likes long walks in the park.")
        await brain.wait_idle()
        if brain.summaries_written:
            break
    assert brain.summaries_written == 1
    warm = chat.calls[-1]
    assert brain.summary in warm[0].content  # the new head, sent after the summary was written
    assert warm[-1].role == "assistant"  # the kept history, without a new user message
    [_ async for _ in brain.reply("What is my dog's name?")]
    assert chat.calls[-1][: len(warm)] == warm  # the next reply starts with exactly that prefix


async def test_a_dropped_turn_leaves_the_window_and_comes_back_through_memory() -> None:
    """``HistoryFold.DROP``: no summary is asked of the model, the prompt's head never changes, how
    far the window reaches is persisted (a restore rebuilds the same window), the kept history is
    computed again at once, and the dropped words are recalled when they matter."""
    chat = FakeChatModel(["[happy] That sounds lovely, tell me more about it please!"])
    db = FakeDatabase()
    config = dataclasses.replace(
        TINY, history_keep_tokens=100, summarize_at_tokens=160, fold=HistoryFold.DROP
    )
    brain = await owned(chat, db, uuid.uuid4(), config)
    await converse(brain, db, "My dog is called Biscuit and he loves the park.")
    for i in range(5):
        await converse(brain, db, f"Message number {i}: the weather was grey and cold all day.")
        await brain.wait_idle()
        assert brain.history_tokens() < config.summarize_at_tokens
    assert brain.folds >= 1 and brain.summaries_written == 0 and brain.summary == ""
    assert not any("summarize" in call[0].content for call in chat.calls)
    assert db.tables.summaries[brain.session_id] == ("", brain.covered_turns) and brain.covered_turns >= 1
    assert all(t.number > brain.covered_turns for t in brain.history)
    heads = {call[0].content for call in chat.calls}
    assert len(heads) == 1  # the persona's head is the same bytes in every request

    folds = brain.folds
    while brain.folds == folds:
        await converse(brain, db, "Another grey and cold day, nothing much happened here.")
        await brain.wait_idle()
    warm = chat.calls[-1]
    assert warm[-1].role == "assistant"  # the kept history, computed before the next reply
    assert [m.content for m in warm if m.role == "user"][-1] == brain.history[-1].user

    [_ async for _ in brain.reply("What is my dog called?")]
    prompt = chat.calls[-1]
    assert prompt[: len(warm)] == warm  # the next reply starts with exactly what was computed
    assert "Biscuit" not in "".join(m.content for m in warm)  # its turn left the window ...
    recalled = prompt[-2]
    assert recalled.role == "system" and "Biscuit" in recalled.content  # ... and memory brought it back

    await brain.wait_idle()
    again = await ConversationBrain.restore(
        brain.session_id, BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, config)
    )
    assert again.covered_turns == brain.covered_turns and again.summary == ""
    # The same window, less the last reply (this test did not store its turn).
    assert [t.number for t in again.history] == [t.number for t in brain.history][:-1]


async def test_a_closing_brain_does_not_warm_the_prompt_after_its_last_summary() -> None:
    chat = FakeChatModel(["[happy] That sounds lovely, tell me more about it please!"], token_delay_s=0.005)
    db = FakeDatabase()
    config = dataclasses.replace(TINY, history_keep_tokens=100, summarize_at_tokens=160)
    brain = make(chat, db, config)
    for i in range(6):
        await converse(brain, db, f"Message number {i}: my dog Biscuit likes long walks in the park.")
        if brain.history_tokens() >= config.summarize_at_tokens:
            break  # the reply's end started the summary
    calls = len(chat.calls)
    await brain.aclose()  # the running summary still lands, nothing is sent after it
    assert brain.summaries_written == 1
    assert len(chat.calls) == calls + 1 and "summarize" in chat.calls[-1][0].content


async def test_a_new_reply_does_not_cut_a_running_summary_short() -> None:
    """A summary once started finishes, even when the next turn comes meanwhile: cut short by every
    reply, it never landed in a long conversation (docs/resilience.md)."""
    chat = FakeChatModel(["[happy] Nice, I like that a lot, thank you for telling me!"], token_delay_s=0.01)
    db = FakeDatabase()
    brain = make(chat, db)
    for i in range(4):
        await converse(brain, db, f"Story part {i}: the castle had seven towers and a moat.")
        await asyncio.sleep(0.03)  # a summary, once due, is part-way through when the next turn comes
    assert chat.cancelled == 0
    assert brain.summaries_written >= 1  # it landed while the conversation went on
    await brain.wait_idle()
    assert db.tables.summaries.get(brain.session_id) is not None


async def test_prompt_never_exceeds_the_context() -> None:
    config = BrainConfig(
        context_tokens=800,
        max_reply_tokens=64,
        history_keep_tokens=5000,
        summarize_at_tokens=7000,
        memory_top_k=0,
    )
    chat = FakeChatModel(["[neutral] " + "word " * 60])
    brain = make(chat, FakeDatabase(), config)
    for i in range(10):
        [_ async for _ in brain.reply(f"Question {i} " + "blah " * 30)]
        prompt = sum(chat.count_tokens(m.content) + 8 for m in chat.calls[-1])
        assert prompt <= config.context_tokens - config.max_reply_tokens
    with pytest.raises(InvalidInputError, match="too long"):
        [_ async for _ in brain.reply("x " * 3000)]


async def test_memories_are_stored_and_recalled_in_a_later_session() -> None:
    chat = FakeChatModel(["[happy] Oh, that's great!"])
    db = FakeDatabase()
    owner = uuid.uuid4()
    first = await owned(chat, db, owner)
    await converse(first, db, "My favourite food is spicy tteokbokki")
    await first.aclose()
    roles = sorted(m[2] for m in db.tables.memories)
    assert roles == ["assistant", "user"]
    second = await owned(chat, db, owner)
    [_ async for _ in second.reply("what is my favourite food")]
    *_, recalled, question = chat.calls[-1]
    assert recalled.role == "system" and "spicy tteokbokki" in recalled.content
    assert question.content == "what is my favourite food"
    assert "spicy tteokbokki" not in chat.calls[-1][0].content  # the prompt's head stays stable


async def test_settled_turns_are_stored_in_memory_only_once_no_reply_is_on_its_critical_path() -> None:
    from avatar.application.critical_path import CriticalPath

    chat = FakeChatModel(["[happy] Oh, that's great!"])
    db = FakeDatabase()
    path = CriticalPath()
    session = dataclasses.replace(Session.start(datetime.now(UTC)), owner_id=uuid.uuid4())
    async with db() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    deps = BrainDeps(chat, FakeTextEmbedder(), db, PERSONA, TINY, background_gate=path.clear)
    brain = ConversationBrain(session.session_id, deps)
    await converse(brain, db, "My favourite food is spicy tteokbokki")
    await converse(brain, db, "And my cat is called Nabi")  # turn 1 may still be cut by a barge-in
    path.enter()  # the next reply's final transcript is in hand; its first audio is not out yet
    await converse(brain, db, "What else?")  # turn 1 settles here
    for _ in range(20):
        await asyncio.sleep(0)
    assert db.tables.memories == [] and path.deferred == 1
    path.leave()  # first audio sent: the embedding and the write may use the cores now
    for _ in range(20):
        await asyncio.sleep(0)
    assert {(m[2], m[3]) for m in db.tables.memories} == {
        ("assistant", "Oh, that's great!"),
        ("user", "My favourite food is spicy tteokbokki"),
    }


async def remembered_food(chat: FakeChatModel, db: FakeDatabase, owner: uuid.UUID) -> ConversationBrain:
    """A second session of ``owner`` after a first that stored a favourite food; priming on."""
    config = dataclasses.replace(TINY, prime_memories=True)
    first = await owned(chat, db, owner, config)
    await converse(first, db, "My favourite food is spicy tteokbokki")
    await first.aclose()
    return await owned(chat, db, owner, config)


async def test_a_prime_on_the_partial_words_sends_the_prompt_the_reply_then_starts_with() -> None:
    chat = FakeChatModel(["[happy] Oh, that's great!"])
    db = FakeDatabase()
    owner = uuid.uuid4()
    second = await remembered_food(chat, db, owner)
    assert not await second.prime("the weather")  # nothing recalled: the head is cached already
    calls = len(chat.calls)
    assert await second.prime("what is my favourite")
    primed = chat.calls[-1]
    assert len(chat.calls) == calls + 1 and primed[-1].role == "system" and "tteokbokki" in primed[-1].content
    assert not await second.prime("what is my favourite food")  # the same memories: not sent again
    assert len(chat.calls) == calls + 1
    [_ async for _ in second.reply("what is my favourite food")]
    assert chat.calls[-1][:-1] == primed  # the server computes only the words after the final
    assert second.primes == 1
    off = await owned(chat, db, owner, TINY)  # prime_memories off: nothing is sent
    assert not await off.prime("what is my favourite") and len(chat.calls) == calls + 2


async def test_no_prime_in_another_language_or_none_clear() -> None:
    # Another language is another system message: the server would drop the cached conversation
    # for the prime, and the reply (in the language of its final words) compute it all again.
    chat = FakeChatModel(["[happy] Oh, that's great!"])
    second = await remembered_food(chat, FakeDatabase(), uuid.uuid4())
    [_ async for _ in second.reply("hello there")]  # the conversation is in English
    calls = len(chat.calls)
    for words in ("what is my favourite 내가 좋아하는 음식이 뭐였지요", "what is my favourite café dish"):
        assert not await second.prime(words)
    assert len(chat.calls) == calls and second.primes == 0
    assert await second.prime("what is my favourite")  # the same words in English are primed


async def test_no_prime_while_a_reply_is_being_written() -> None:
    chat = FakeChatModel(["[happy] Oh, that's great!"])
    second = await remembered_food(chat, FakeDatabase(), uuid.uuid4())
    reply = second.reply("tell me about food")
    await anext(reply)  # the reply is under way
    calls = len(chat.calls)
    assert not await second.prime("what is my favourite") and len(chat.calls) == calls
    await reply.aclose()


async def test_the_prompt_head_is_byte_stable_while_recalled_memories_change() -> None:
    # The model server reuses its prompt cache only for an identical prefix: the persona, the
    # examples and the history must come first and unchanged; what changes per turn goes last.
    chat = FakeChatModel(["[happy] Noted!"])
    db = FakeDatabase()
    owner = uuid.uuid4()
    earlier = await owned(chat, db, owner)
    for text in ("I play the cello", "My sister lives in Busan", "I am learning Korean"):
        await converse(earlier, db, text)
    await earlier.aclose()
    brain = await owned(chat, db, owner)
    prompts = []
    for text in ("tell me about music", "where does my family live", "what language am I learning"):
        await converse(brain, db, text)
        prompts.append(chat.calls[-1])
    recalled = [[m.content for m in p if m.role == "system"][1:] for p in prompts]
    assert sum(bool(r) for r in recalled) >= 2 and len({tuple(r) for r in recalled}) > 1  # they differ
    for before, after in itertools.pairwise(prompts):
        # The whole previous prompt, its recalled memories included, is a prefix of the next one,
        # followed by the reply exactly as the model streamed it (its emotion tag too).
        assert after[: len(before)] == before
        assert after[len(before)] == ChatMessage("assistant", "[happy] Noted!")
    # A memory already in the window is not recalled a second time.
    recalls = [m.content for m in prompts[-1] if m.content.startswith("Things you remember")]
    lines = [line for content in recalls for line in content.splitlines()[1:]]
    assert lines and len(lines) == len(set(lines))


async def test_recalled_memories_stay_within_their_token_budget() -> None:
    """Every recalled token is computed before the reply's first one: the best memories that fit
    ``memory_max_tokens`` are recalled, a long one is passed over for a shorter one after it."""
    chat = FakeChatModel(["[happy] Noted!"])
    db = FakeDatabase()
    owner = uuid.uuid4()
    earlier = await owned(chat, db, owner)
    long = "My cello is old " + "and it has a long story from my grandfather's house in the hills " * 3
    for text in (long, "My cello is called Bella"):
        await converse(earlier, db, text)
    await earlier.aclose()

    async def recalled(budget: int) -> str:
        config = dataclasses.replace(TINY, memory_top_k=4, memory_max_tokens=budget)
        brain = await owned(chat, db, owner, config)
        [_ async for _ in brain.reply("tell me about my cello")]
        tail = chat.calls[-1][-2]
        return tail.content if tail.role == "system" else ""

    unbounded = await recalled(0)
    assert "grandfather" in unbounded and "called Bella" in unbounded
    short = chat.count_tokens("My cello is called Bella") + 6
    bounded = await recalled(short + 4)
    assert "called Bella" in bounded and "grandfather" not in bounded
    assert "called Bella" not in await recalled(short - 1)


async def test_a_memory_in_the_window_is_not_recalled_again() -> None:
    chat = FakeChatModel(["[happy] Noted!"])
    db = FakeDatabase()
    owner = uuid.uuid4()
    earlier = await owned(chat, db, owner)
    await converse(earlier, db, "I play the cello every evening")
    await earlier.aclose()
    brain = await owned(chat, db, owner)
    await converse(brain, db, "do you remember my cello")
    assert any("the cello every evening" in m.content for m in chat.calls[-1] if m.role == "system")
    await converse(brain, db, "the cello again please")
    tail = chat.calls[-1][-2]  # what is recalled for this turn, if anything, comes just before it
    assert not (tail.role == "system" and "the cello every evening" in tail.content)
    in_window = [m for m in chat.calls[-1] if m.role == "system" and "the cello every evening" in m.content]
    assert len(in_window) == 1  # once, with the turn it was recalled for


async def test_a_reply_stops_at_its_sentence_limit_and_the_model_stream_is_closed() -> None:
    chat = FakeChatModel(["[happy] One here. Two there! Three? Four now. Five later."])
    db = FakeDatabase()
    brain = make(chat, db, dataclasses.replace(TINY, max_spoken_sentences=3))
    events = await converse(brain, db, "Count for me")
    spoken = "".join(e.text for e in events if isinstance(e, TextDelta))
    end = events[-1]
    assert isinstance(end, ReplyEnded) and end.text == "One here. Two there! Three?" == spoken.rstrip()
    assert chat.cancelled == 1  # generation stopped, not merely hidden
    assert brain.history[-1].assistant == "One here. Two there! Three?"
    await converse(brain, db, "And then?")
    assert ChatMessage("assistant", "[happy] One here. Two there! Three?") in chat.calls[-1]


async def test_no_sentence_limit_speaks_the_whole_reply() -> None:
    chat = FakeChatModel(["[happy] One. Two. Three. Four. Five."])
    brain = make(chat, FakeDatabase(), dataclasses.replace(TINY, max_spoken_sentences=0))
    events = [e async for e in brain.reply("Count")]
    assert isinstance(events[-1], ReplyEnded) and events[-1].text == "One. Two. Three. Four. Five."
    assert chat.cancelled == 0


async def test_bad_input_and_bad_persona_are_clear_errors(tmp_path: Path) -> None:
    brain = make(FakeChatModel(), FakeDatabase())
    with pytest.raises(InvalidInputError, match="empty"):
        [_ async for _ in brain.reply("   ")]
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        parse_persona("[persona\nname=")
    with pytest.raises(InvalidInputError, match="system_prompt"):
        parse_persona('[persona]\nname = "A"\n')
    with pytest.raises(InvalidInputError, match="emotion tag"):
        parse_persona('[persona]\nname="A"\nsystem_prompt="B"\n[[examples]]\nuser="hi"\nassistant="hello"\n')
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_persona(tmp_path / "missing.toml")
    with pytest.raises(InvalidInputError):
        BrainConfig(history_keep_tokens=10, summarize_at_tokens=5)


async def test_warm_up_sends_the_prompt_head_the_first_reply_starts_with() -> None:
    chat = FakeChatModel(["[happy] Hello there, friend."])
    brain = make(chat, FakeDatabase())
    assert await brain.warm_up("en")
    head = chat.calls[0]
    assert head[0].role == "system" and "English" in head[0].content
    assert head[-1].role == "assistant"  # the persona's last example: no user words yet
    await converse(brain, FakeDatabase(), "Hi, how are you?")
    assert chat.calls[1][: len(head)] == head


async def test_warm_up_with_the_model_down_is_only_skipped() -> None:
    chat = FakeChatModel(fail_with=ChatModelError(ChatErrorKind.REFUSED, "connection refused"))
    assert not await make(chat, FakeDatabase()).warm_up("en")
