"""The streaming reply parser: emotion first, thinking and tags never released."""

from __future__ import annotations

import pytest

from avatar.application.brain import ReplyParser, detect_language, guess_emotion, strip_markup
from avatar.domain.models import Emotion


def run(raw: str, step: int) -> tuple[Emotion, str, int]:
    """Feed ``raw`` in pieces of ``step`` characters; returns emotion, text, and how many pieces
    of text were released before the emotion was known (must be 0)."""
    parser = ReplyParser()
    emotion: Emotion | None = None
    out: list[str] = []
    early = 0
    for i in range(0, len(raw), step):
        decided, text = parser.feed(raw[i : i + step])
        emotion = emotion or decided
        if text and emotion is None:
            early += 1
        out.append(text)
    decided, text = parser.finish()
    emotion = emotion or decided
    out.append(text)
    assert emotion is not None
    return emotion, "".join(out), early


CASES = [
    ("[happy] Hello there!", Emotion.HAPPY, "Hello there!"),
    ("  [Excited]Wow, that is great!", Emotion.EXCITED, "Wow, that is great!"),
    ("(sad) Oh no.", Emotion.SAD, "Oh no."),
    ("<think>the user is sad</think>[sad] I'm here for you.", Emotion.SAD, "I'm here for you."),
    ("[neutral] Okay. <think>hidden</think>Next part.", Emotion.NEUTRAL, "Okay. Next part."),
    ("Really? [surprised] No way!", Emotion.SURPRISED, "Really? No way!"),
    ("emotion: angry | That is unacceptable.", Emotion.ANGRY, "That is unacceptable."),
    ("[smiles] Hello, friend. How are you?", Emotion.NEUTRAL, "Hello, friend. How are you?"),
    ("[displeased] That's a shame.", Emotion.ANGRY, "That's a shame."),
    ("[Pleased]Nice to meet you.", Emotion.HAPPY, "Nice to meet you."),
    ("(thoughtful) Let me think.", Emotion.NEUTRAL, "Let me think."),
    ("[hap The bus comes at nine.", Emotion.HAPPY, "The bus comes at nine."),
    ("[xyz The bus comes at nine.", Emotion.NEUTRAL, "The bus comes at nine."),
    ("I'm so sorry to hear that.", Emotion.SAD, "I'm so sorry to hear that."),
    ("Plain reply without a tag.", Emotion.NEUTRAL, "Plain reply without a tag."),
    ("a[1] stays", Emotion.NEUTRAL, "a[1] stays"),
    ("reasoning first</think>[happy] Hi!", Emotion.HAPPY, "Hi!"),
    ("<think>never closed", Emotion.NEUTRAL, ""),
    ("", Emotion.NEUTRAL, ""),
]


@pytest.mark.parametrize(("raw", "emotion", "text"), CASES)
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_parser_splits_anywhere(raw: str, emotion: Emotion, text: str, step: int) -> None:
    got_emotion, got_text, early = run(raw, step)
    assert (got_emotion, got_text) == (emotion, text)
    assert early == 0
    assert "[" not in got_text.replace("[1]", "") and "<think" not in got_text


def test_a_tag_naming_a_feeling_releases_the_words_at_once() -> None:
    # SmolLM2 writes "[displeased]": read as a stage direction, the words waited for the end of the
    # first clause (~100-190 ms of the first token on the embedded default).
    for tag, emotion in (("[displeased]", Emotion.ANGRY), ("[surprised]", Emotion.SURPRISED)):
        parser = ReplyParser()
        assert parser.feed(tag) == (emotion, "")
        assert parser.feed(" That") == (None, "That")
        assert parser.tagged
    stage = ReplyParser()  # a stage direction still waits for the clause to guess from
    assert stage.feed("[smiles] That") == (None, "")
    assert stage.feed(" is so") == (None, "")
    assert stage.feed(" sad.") == (Emotion.SAD, "That is so sad.")
    assert not stage.tagged


def test_strip_markup_and_guess() -> None:
    assert strip_markup("<think>x</think>[happy] Hi [sad] there") == "Hi there"
    assert guess_emotion("Wow, really? No way!") is Emotion.SURPRISED
    assert guess_emotion("The train leaves at nine.") is Emotion.NEUTRAL


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("안녕하세요, 오늘 어때요?", "ko"),
        ("こんにちは、元気ですか", "ja"),
        ("你好今天怎么样", "zh"),
        ("Hello there", "en"),
        ("Привет", "ru"),
        ("¿Qué tal?", None),
        ("Ça va?", None),
        ("He was not… well—I don\u2019t know.", "en"),  # punctuation is not a letter
        ("123", None),
    ],
)
def test_detect_language(text: str, lang: str | None) -> None:
    assert detect_language(text) == lang
