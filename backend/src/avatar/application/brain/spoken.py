"""Replies sized for speech: where a streamed reply reaches its sentence limit.

A spoken reply is listened to, not skimmed: the persona asks for one to three short sentences, but a
small model often goes on (or repeats itself) for twenty seconds of audio, which makes the history,
the next prompt and the barge-in rate grow (docs/adr/0014-voice-latency.md). The brain stops the
model's stream after ``BrainConfig.max_spoken_sentences`` complete sentences.
"""

from __future__ import annotations

import re

#: A sentence ends at ``.``, ``!``, ``?`` or an ellipsis (with closing quotes or brackets) followed by
#: white space, or at a full-width CJK mark (no space follows those).
_SENTENCE_END = re.compile(
    r"(?:[.!?]+|\u2026)[\"'\u201d\u2019)\]]*(?=\s)"  # Latin marks, then white space
    r"|[\u3002\uff01\uff1f]+[\u300d\u300f\uff09]*"  # CJK marks
)
#: Words whose period does not end a sentence ("Dr. Kim", "e.g. this").
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "prof", "sr", "jr"})
_LAST_WORD = re.compile(r"([\w.]+)\.$")


def sentence_cut(text: str, limit: int) -> int | None:
    """The end of ``text``'s ``limit``-th complete sentence when more text follows it, else ``None``.

    ``limit`` <= 0 means no limit. A number such as ``3.5`` or an abbreviation such as ``Dr.`` does
    not end a sentence; a mark at the very end of ``text`` is not known to end one until the white
    space after it arrives (more of the stream may follow, e.g. ``3.`` then ``5``).
    """
    if limit <= 0:
        return None
    count = 0
    for match in _SENTENCE_END.finditer(text):
        mark = match.group()
        if mark.startswith(".") and len(mark.rstrip("\"'\u201d\u2019)]")) == 1:
            word = _LAST_WORD.search(text[: match.start() + 1])
            if word is not None and word.group(1).lower() in _ABBREVIATIONS:
                continue
        count += 1
        if count == limit:
            end = match.end()
            return end if text[end:].strip() else None
    return None
