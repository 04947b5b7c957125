"""The streaming clause chunker: ko/zh/ja/en splitting, numbers, abbreviations, URLs, emoji, tokens."""
# Full-width CJK punctuation is what these tests are about.
# ruff: noqa: RUF001

from __future__ import annotations

import pytest

from avatar_common.text import ClauseChunker, detect_language, speakable, split_text


def _feed_tokens(tokens: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    """Feed tokens one by one; returns (token index at which each chunk came out, chunks)."""
    chunker = ClauseChunker()
    emitted: list[tuple[int, str]] = []
    for i, token in enumerate(tokens):
        emitted.extend((i, chunk) for chunk in chunker.feed(token))
    emitted.extend((len(tokens), chunk) for chunk in chunker.flush())
    return emitted, [c for _, c in emitted]


def test_english_sentences_and_clauses() -> None:
    chunks = split_text("Hello there, my dear friend. How are you today? I am fine!")
    assert chunks == ["Hello there, my dear friend.", "How are you today?", "I am fine!"]


def test_english_long_clause_is_cut_at_a_comma_short_one_is_not() -> None:
    chunks = split_text("Well, when the rain finally stopped in the valley, we walked home.")
    assert chunks == ["Well, when the rain finally stopped in the valley,", "we walked home."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs 3.50 dollars today. Thanks.", ["It costs 3.50 dollars today.", "Thanks."]),
        ("We sold 1,000,000 units, a record. Great.", ["We sold 1,000,000 units,", "a record.", "Great."]),
        (
            "Dr. Smith met Mr. Jones at 10:30 a.m. on Monday. Bye.",
            ["Dr. Smith met Mr. Jones at 10:30 a.m. on Monday.", "Bye."],
        ),
        (
            "Read https://example.com/a.b?c=1, it helps. Or mail me@example.org. Done.",
            ["Read https://example.com/a.b?c=1, it helps.", "Or mail me@example.org.", "Done."],
        ),
        ("That is great! 😀 See you soon. 👋", ["That is great! 😀", "See you soon. 👋"]),
        ("Pi is about 3.14159. The end.", ["Pi is about 3.14159.", "The end."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("Use e.g. apples or i.e. fruit. Ok.", ["Use e.g. apples or i.e. fruit.", "Ok."]),
    ],
)
def test_numbers_abbreviations_urls_emoji(text: str, expected: list[str]) -> None:
    assert split_text(text) == expected


def test_chinese_chunks_of_ten_to_fifteen_characters_at_punctuation() -> None:
    text = (
        "今天天气很好，我们一起去公园散步吧。你觉得怎么样？我觉得这个主意非常好，而且我们还可以顺便去吃午饭。"
    )
    chunks = split_text(text)
    assert "".join(chunks) == text
    assert chunks[0] == "今天天气很好，"  # the longest clause that fits in 15 characters
    assert chunks[1] == "我们一起去公园散步吧。"
    assert chunks[2] == "你觉得怎么样？"
    for chunk in chunks:
        letters = [c for c in chunk if c.isalnum()]
        assert len(letters) <= 15, chunk


def test_chinese_without_punctuation_is_cut_at_fifteen_characters() -> None:
    text = "我觉得这个主意非常好而且我们还可以顺便去吃午饭然后回家"
    chunks = split_text(text)
    assert "".join(chunks) == text
    assert [len(c) for c in chunks[:-1]] == [15]


def test_chinese_decimal_is_not_a_boundary() -> None:
    chunks = split_text("价格是3.5元，非常便宜的东西啊。好的。")
    assert chunks[0].startswith("价格是3.5元")
    assert chunks[-1] == "好的。"


def test_korean_sentences_and_long_runs_cut_at_spaces() -> None:
    assert split_text("안녕하세요, 오늘 날씨가 정말 좋네요. 우리 같이 공원에 산책하러 갈까요? 좋아요!") == [
        "안녕하세요, 오늘 날씨가 정말 좋네요.",
        "우리 같이 공원에 산책하러 갈까요?",
        "좋아요!",
    ]
    chunks = split_text("오늘은 정말로 아주아주 재미있는 하루였어요 그리고 내일도 기대돼요")
    assert " ".join(chunks) == "오늘은 정말로 아주아주 재미있는 하루였어요 그리고 내일도 기대돼요"
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)
    assert all(sum(ch.isalnum() for ch in c) <= 15 for c in chunks)


def test_japanese_sentences() -> None:
    assert split_text("今日はいい天気ですね。一緒に公園へ散歩に行きませんか？") == [
        "今日はいい天気ですね。",
        "一緒に公園へ散歩に行きませんか？",
    ]


def test_first_english_clause_is_emitted_as_soon_as_it_is_complete_token_by_token() -> None:
    tokens = [
        "Sure",
        ",",
        " I",
        " can",
        " help",
        " with",
        " that",
        ".",
        " The",
        " answer",
        " is",
        " 4",
        ".",
        "5",
        " percent",
        ".",
    ]
    emitted, chunks = _feed_tokens(tokens)
    assert chunks == ["Sure, I can help with that.", "The answer is 4.5 percent."]
    # Out when the token after the full stop arrives (it proves the '.' ends the sentence).
    assert emitted[0][0] == tokens.index(" The")
    # "4." followed by "5" was not cut as a sentence end.
    assert emitted[1][0] == len(tokens)


def test_first_cjk_clause_is_emitted_on_its_full_width_mark() -> None:
    tokens = ["你好", "，", "我是", "你的", "助手", "。", "今天", "想", "聊", "什么", "？"]
    emitted, chunks = _feed_tokens(tokens)
    assert chunks == ["你好，我是你的助手。", "今天想聊什么？"]
    assert emitted[0][0] == 5  # the very token with "。"
    assert emitted[1][0] == 10


def test_korean_token_stream() -> None:
    tokens = ["안녕", "하세요", ".", " 반갑", "습니다", "!"]
    emitted, chunks = _feed_tokens(tokens)
    assert chunks == ["안녕하세요.", "반갑습니다!"]
    assert emitted[0][0] == 3


def test_flush_keeps_trailing_emoji_and_resets() -> None:
    chunker = ClauseChunker()
    assert chunker.feed("Good night. ") == ["Good night."]
    assert chunker.feed("🌙") == []
    assert chunker.flush() == []
    assert chunker.pending == ""
    assert chunker.feed("Again. ") == ["Again."]


def test_detect_language_and_speakable() -> None:
    assert detect_language("안녕하세요") == "ko"
    assert detect_language("今日はいい天気") == "ja"
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("Hello") == "en"
    assert speakable("Great 😀  job!\n") == "Great job!"


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ClauseChunker(cjk_min=20, cjk_max=10)


def _first_short(text: str, step: int = 3) -> list[str]:
    """Stream ``text`` in small pieces through a chunker whose first chunk is kept short."""
    chunker = ClauseChunker(first_max_words=10)
    out: list[str] = []
    for i in range(0, len(text), step):
        out.extend(chunker.feed(text[i : i + step]))
    return out + chunker.flush()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # punctuation before ten words still decides
        ("Sure, I can help with that. Ask away.", ["Sure, I can help with that.", "Ask away."]),
        # a long first sentence: cut before a conjunction once four words are there
        (
            "I really love the way you describe the old town and the river at night because it is calm.",
            ["I really love the way you describe the old town", "and the river at night because it is calm."],
        ),
        # no conjunction: cut after ten words; only the first chunk is cut this way
        (
            "Oh that sounds like a really lovely thing to do on a sunny afternoon with old friends "
            "from school and family.",
            [
                "Oh that sounds like a really lovely thing to do",
                "on a sunny afternoon with old friends from school and family.",
            ],
        ),
        # a conjunction within the first four words does not cut
        ("Well and then we went home.", ["Well and then we went home."]),
        ("Hi there.", ["Hi there."]),
    ],
)
def test_a_long_first_chunk_is_cut_early(text: str, expected: list[str]) -> None:
    assert _first_short(text) == expected
    assert _first_short(text, step=1) == expected  # the same whatever the token sizes


def test_a_growing_last_word_is_not_taken_for_a_conjunction() -> None:
    chunker = ClauseChunker(first_max_words=10)
    assert chunker.feed("I would like to go an") == []  # "an" may become "and"
    assert chunker.feed("d see it") == ["I would like to go"]
    assert chunker.flush() == ["and see it"]


def test_the_first_chunk_rule_starts_again_after_flush_and_leaves_cjk_alone() -> None:
    chunker = ClauseChunker(first_max_words=4, first_pause_words=2)
    assert chunker.feed("one two three four five six seven ") == ["one two three four"]
    assert chunker.feed("eight nine ten eleven twelve ") == []  # later chunks: the usual limits
    assert chunker.flush() == ["five six seven eight nine ten eleven twelve"]
    assert chunker.feed("alpha beta gamma delta epsilon ") == ["alpha beta gamma delta"]
    chunker.flush()
    text = "今天天气很好我们一起去公园散步吧你觉得怎么样"
    assert ClauseChunker(first_max_words=4).feed(text) == ClauseChunker().feed(text) == [text[:15]]


def test_first_chunk_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="first chunk"):
        ClauseChunker(first_max_words=-1)
    with pytest.raises(ValueError, match="first chunk"):
        ClauseChunker(first_max_words=5, first_pause_words=0)
