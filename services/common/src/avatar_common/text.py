"""Streaming text chunking for speech synthesis: sentences and clauses in ko, zh, ja and en.

The chunker cuts text where a speaker would pause, so that synthesis can start on the first clause
while the rest of the text (often an LLM token stream) is still arriving ("chunking and queuing",
docs/design-notes.md §1). CJK chunks aim at 10-15 characters, cut at punctuation; Latin text is
cut at sentence ends and, once a clause has a few words, at clause punctuation.

An ASCII mark (``.``, ``,``, ``?``) only ends a chunk when whitespace follows it, which keeps
decimals (``3.14``), thousands (``1,000``), times (``10:30``), URLs and e-mail addresses whole;
known abbreviations (``Dr.``, ``e.g.``) never end one. Full-width CJK marks end a chunk at once.
"""

from __future__ import annotations

import re
import unicodedata

#: Marks that end a sentence (always a cut).
SENTENCE_END = frozenset(  # . ! ? and CJK full stops, ellipsis
    ".!?\u3002\uff01\uff1f\u2026\u203c\u2047\u2048\u2049"
)
#: Marks that end a clause (a cut once the chunk is long enough).
CLAUSE_END = frozenset(",;:\uff0c\u3001\uff1b\uff1a\u2014")
_FULL_WIDTH = frozenset("\u3002\uff01\uff1f\uff0c\u3001\uff1b\uff1a\u2026")
#: Closing quotes and brackets that stay with the mark before them.
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019\u300d\u300f\uff09\u3011\u3009\u300b\u3015")

ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "sr",
        "jr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "corp",
        "no",
        "fig",
        "approx",
        "a.m",
        "p.m",
        "u.s",
        "u.k",
        "dept",
        "est",
        "mt",
        "ave",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "cf",
        "al",
    }
)

_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2600, 0x27BF),
    (0x2B00, 0x2BFF),
    (0xFE00, 0xFE0F),
    (0x200D, 0x200D),
    (0xE0020, 0xE007F),
)
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")


def is_emoji(ch: str) -> bool:
    """Whether ``ch`` is an emoji (or an emoji joiner/modifier) that no TTS engine can speak."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _EMOJI_RANGES)


def is_cjk(ch: str) -> bool:
    """Han, kana or Hangul: characters that are counted one by one (no spaces between words)."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= code <= 0x4DBF
        or 0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0x1100 <= code <= 0x11FF
        or 0x3130 <= code <= 0x318F
        or 0xF900 <= code <= 0xFAFF
    )


def detect_language(text: str) -> str:
    """Guess the language of ``text`` from its script: ``ko``, ``ja``, ``zh`` or ``en``.

    Hangul means Korean, any kana means Japanese, Han without kana means Chinese, anything
    else is treated as English (the only Latin-script language the packaged voices speak).
    """
    hangul = kana = han = 0
    for ch in text:
        code = ord(ch)
        if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
            hangul += 1
        elif 0x3040 <= code <= 0x30FF:
            kana += 1
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
            han += 1
    if hangul and hangul >= han:
        return "ko"
    if kana:
        return "ja"
    if han:
        return "zh"
    return "en"


def speakable(text: str) -> str:
    """``text`` without emoji and with runs of whitespace collapsed (what an engine should read)."""
    kept = "".join(" " if is_emoji(ch) else ch for ch in text)
    return " ".join(kept.split())


def has_words(text: str) -> bool:
    """Whether ``text`` has anything to pronounce (a letter or a digit)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _size(chunk: str) -> tuple[int, bool]:
    """(length, is_cjk): CJK characters for CJK text, words otherwise."""
    cjk = sum(1 for ch in chunk if is_cjk(ch))
    letters = sum(1 for ch in chunk if ch.isalpha())
    if cjk and cjk * 2 >= letters:
        return sum(1 for ch in chunk if unicodedata.category(ch)[0] in "LN"), True
    return len(chunk.split()), False


#: Words a speaker often pauses before: a first chunk without punctuation may end ahead of them.
PAUSE_BEFORE = frozenset(
    "and but or so because which who whose when while where if though although since until unless "
    "then".split()
)
_WORD_PUNCTUATION = "\"'()[]{}.,;:!?"


class ClauseChunker:
    """Incremental clause splitter: feed text pieces as they come, get speakable chunks out.

    ``feed`` returns every chunk that is complete so far, so the first clause is handed to
    synthesis as soon as its closing mark (and, for ASCII marks, the whitespace after it) has
    arrived; ``flush`` returns the rest at the end of the text.

    Args:
        cjk_min: A CJK chunk is cut at a clause mark only once it has this many characters.
        cjk_max: A CJK chunk without punctuation is cut after this many characters.
        min_words: A Latin-script chunk is cut at a clause mark only once it has this many words.
        max_words: A Latin-script chunk without punctuation is cut at a space after this many words.
        first_max_words: The first Latin-script chunk of a text is cut at a space after this many
            words even without punctuation, and before a conjunction ("and", "because", "which", ...)
            once it has ``first_pause_words`` words (0: the first chunk follows the other rules).
            Speech starts with the first chunk, and a sentence-long first chunk delays it twice: the
            model writes it to its end, then the voice synthesizes all of it before the first audio
            (docs/adr/0014-voice-latency.md, sixth round).
        first_pause_words: Least words of a first chunk cut before a conjunction (at most
            ``first_max_words``).
    """

    def __init__(
        self,
        *,
        cjk_min: int = 10,
        cjk_max: int = 15,
        min_words: int = 3,
        max_words: int = 40,
        first_max_words: int = 0,
        first_pause_words: int = 4,
    ) -> None:
        if not 0 < cjk_min <= cjk_max or not 0 < min_words <= max_words:
            raise ValueError("chunk limits must be positive and min <= max")
        if first_max_words < 0 or first_pause_words <= 0:
            raise ValueError("first chunk limits must be positive (first_max_words 0: off)")
        self._cjk_min = cjk_min
        self._cjk_max = cjk_max
        self._min_words = min_words
        self._max_words = max_words
        self._first_max_words = first_max_words
        self._first_pause_words = min(first_pause_words, first_max_words or first_pause_words)
        self._first = True
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        """Add a piece of text (a token, a word, a whole paragraph); returns the completed chunks."""
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of text: returns the remaining chunks and resets the chunker."""
        out = self._drain(final=True)
        rest = self._buf.strip()
        self._buf = ""
        self._first = True
        if rest and has_words(rest):
            out.append(rest)
        elif rest and out:
            out[-1] = f"{out[-1]} {rest}"  # trailing emoji or marks stay with the last chunk
        return out

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = self._next_cut(final=final)
            if self._first and self._first_max_words:
                early = self._first_cut(final=final)
                if early is not None and (cut is None or early < cut):
                    cut = early
            if cut is None:
                return out
            chunk, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if chunk:
                out.append(chunk)
                self._first = False

    def _first_cut(self, *, final: bool) -> int | None:
        """Where the first chunk may end without punctuation (``first_max_words``), or None."""
        buf = self._buf
        if _size(buf)[1]:
            return None  # CJK chunks are short already (cjk_min / cjk_max)
        words = list(re.finditer(r"\S+", buf))
        if not final and words and words[-1].end() == len(buf):
            words.pop()  # the last word may still grow ("an" -> "and")
        for index, word in enumerate(words):
            if index >= self._first_max_words:
                return word.start()
            bare = word.group().lower().strip(_WORD_PUNCTUATION)
            if index >= self._first_pause_words and bare in PAUSE_BEFORE:
                return word.start()
        return None

    def _next_cut(self, *, final: bool) -> int | None:
        buf = self._buf
        n = len(buf)
        last_space = -1
        last_mark = -1  # end of the last clause mark passed over for being too early
        for i, ch in enumerate(buf):
            if ch.isspace():
                last_space = i
            if ch in SENTENCE_END or ch in CLAUSE_END:
                end = self._boundary_end(buf, i, final=final)
                if end == -1:
                    return None  # undecided until more text arrives
                if end is None:
                    continue
                chunk = buf[:end]
                if not has_words(chunk):
                    continue
                if ch in SENTENCE_END:
                    if re.fullmatch(r"\s*\d{1,2}[.)]\s*", chunk) and end < n:
                        continue  # a list marker ("1. ") is read with its item
                    return end
                size, cjk = _size(chunk)
                if size >= (self._cjk_min if cjk else self._min_words):
                    return end
                last_mark = end
                continue
            # Hard cut of a long run without punctuation.
            size, cjk = _size(buf[: i + 1])
            if cjk and size >= self._cjk_max and unicodedata.category(ch)[0] in "LN":
                if i + 1 < n or final:
                    nxt = buf[i + 1] if i + 1 < n else ""
                    if nxt and (nxt in SENTENCE_END or nxt in CLAUSE_END or nxt in _CLOSERS):
                        continue  # the mark right after belongs to this chunk
                    # Prefer punctuation, then (Korean has spaces) the last word boundary.
                    if last_mark > 0:
                        return last_mark
                    if last_space > 0 and _size(buf[:last_space])[0] >= self._cjk_min:
                        return last_space
                    return i + 1
                return None
            if not cjk and size > self._max_words and last_space > 0:
                return last_space
        return None

    @staticmethod
    def _boundary_end(buf: str, i: int, *, final: bool) -> int | None:
        """Where a chunk ending at the mark ``buf[i]`` ends; None if not a boundary, -1 if undecided."""
        n = len(buf)
        ch = buf[i]
        j = i + 1
        while True:
            while j < n and (buf[j] in _CLOSERS or buf[j] in SENTENCE_END or is_emoji(buf[j])):
                j += 1
            k = j
            while k < n and buf[k] in " \t":
                k += 1
            if k < n and k > j and is_emoji(buf[k]):
                j = k  # "Great! 😀": the emoji after the mark stays with its sentence
                continue
            break
        if ch in _FULL_WIDTH:
            return j
        prev = buf[i - 1] if i > 0 else ""
        if j >= n:
            if not final:
                return -1
            nxt = ""
        else:
            nxt = buf[j]
        if nxt and not nxt.isspace():
            # "3.14", "1,000", "10:30", "example.com", "e.g.x": not a boundary. An ASCII mark
            # right after CJK text ("你好,世界") is one, unless digits surround it.
            if prev and is_cjk(prev) and not nxt.isdigit():
                return j
            return None
        if ch == ".":
            m = _WORD_BEFORE.search(buf[:i])
            if m and m.group(1).lower().rstrip(".") in ABBREVIATIONS:
                return None
            if m and len(m.group(1)) == 1 and m.group(1).isupper():
                return None  # an initial: "J. R. R. Tolkien"
        return j


def split_text(text: str, **limits: int) -> list[str]:
    """Split a whole text into speakable chunks (the same rules as :class:`ClauseChunker`)."""
    chunker = ClauseChunker(**limits)
    return [*chunker.feed(text), *chunker.flush()]
