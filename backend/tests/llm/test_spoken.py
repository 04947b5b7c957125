"""Where a streamed reply reaches its sentence limit (application/brain/spoken.py)."""

from __future__ import annotations

import pytest

from avatar.application.brain.spoken import sentence_cut


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("One. Two. Three", 2, len("One. Two.")),
        ("One. Two.", 2, None),  # the second sentence is the end so far: nothing to cut yet
        ("One. Two. ", 2, None),  # only white space follows
        ("Hi! Are you ok? Yes.\nMore", 3, len("Hi! Are you ok? Yes.")),
        ("It costs 3.5 dollars. Then more", 1, len("It costs 3.5 dollars.")),
        ("Ask Dr. Kim about it. Later", 1, len("Ask Dr. Kim about it.")),
        ('She said "stop." Then left', 1, len('She said "stop."')),
        ("Wait... what? ok", 1, len("Wait...")),
        ("좋아요! 정말요? 네", 2, len("좋아요! 정말요?")),
        ("你好\u3002我很好\uff01还有", 2, len("你好\u3002我很好\uff01")),
        ("One. Two. Three. Four.", 0, None),
        ("One. Two. Three. Four.", -1, None),
        ("No mark at all and more words", 1, None),
    ],
)
def test_sentence_cut(text: str, limit: int, expected: int | None) -> None:
    assert sentence_cut(text, limit) == expected


def test_a_mark_without_the_space_after_it_is_undecided() -> None:
    # "3." could become "3.5": the stream has to show the white space first.
    assert sentence_cut("One. It is 3.", 2) is None
    assert sentence_cut("One. It is 3.5 now. Go", 2) == len("One. It is 3.5 now.")
