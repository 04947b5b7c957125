"""Turn a model's raw token stream into clean speakable text plus one emotion (pure logic).

The model is asked to open each reply with a tag such as ``[happy]``. Small models often omit or
garble it, and reasoning models wrap thoughts in ``<think>...</think>``; neither may ever reach
the listener. :class:`ReplyParser` is fed deltas and releases text only once it is known to be
clean, and decides the emotion before the first character is released.
"""

from __future__ import annotations

import re

from avatar.domain.models import Emotion

_EMOTIONS = "|".join(e.value for e in Emotion)
_OPEN_THINK = ("<think>", "<thinking>")
_CLOSE_THINK = ("</think>", "</thinking>")
_ALL_THINK = _OPEN_THINK + _CLOSE_THINK
#: A leading tag: ``[happy]``, ``(Happy)``, ``<sad>``, ``*excited*``, ``[emotion: happy]``, ``happy:``.
_LEAD_TAG = re.compile(
    r"^\s*(?:[\[(<*]+\s*(?:emotion\s*[:=]\s*)?([A-Za-z][A-Za-z ]{0,20}?)\s*[\])>*]+|"
    r"(?:emotion\s*[:=]\s*)?(" + _EMOTIONS + r")\s*[:|]\s)\s*",
    re.IGNORECASE,
)
_INLINE_TAG = re.compile(r"\s*\[\s*(?:" + _EMOTIONS + r")\s*\]", re.IGNORECASE)
_OPENERS = "[(<*"
_TAG_WINDOW = 28
#: Without a tag the emotion is guessed from the first clause: the text-to-speech stage waits for a
#: complete clause anyway, so holding it back here adds no latency to the first audio.
_CLAUSE_END = re.compile("[.!?\u3002\uff01\uff1f\\n]|[,\uff0c\u3001;](?=\\s)")
_HEAD_LIMIT = 64

_KEYWORDS: dict[Emotion, tuple[str, ...]] = {
    Emotion.EXCITED: (
        "can't wait",
        "so excited",
        "excited",
        "amazing",
        "awesome",
        "incredible",
        "yay",
        "신나",
        "대박",
        "ワクワク",
        "太棒",
    ),
    Emotion.HAPPY: (
        "glad",
        "happy",
        "great",
        "nice",
        "love",
        "wonderful",
        "congrat",
        "thank",
        ":)",
        "좋아",
        "기뻐",
        "반가",
        "嬉し",
        "楽し",
        "开心",
        "高兴",
    ),
    Emotion.SAD: (
        "sorry",
        "sad",
        "unfortunately",
        "miss you",
        "oh no",
        "lonely",
        "cry",
        "미안",
        "슬퍼",
        "슬프",
        "悲し",
        "ごめん",
        "难过",
        "抱歉",
    ),
    Emotion.ANGRY: ("angry", "annoying", "unacceptable", "furious", "how dare", "화나", "짜증", "怒", "生气"),
    Emotion.SURPRISED: (
        "wow",
        "really?",
        "no way",
        "whoa",
        "surpris",
        "what?!",
        "unbelievable",
        "헐",
        "정말?",
        "진짜?",
        "えっ",
        "本当",
        "真的吗",
    ),
}


def guess_emotion(text: str) -> Emotion:
    """A cheap keyword guess for replies that came without a usable tag (neutral when unsure)."""
    lowered = text.lower()
    scores = {emotion: sum(lowered.count(word) for word in words) for emotion, words in _KEYWORDS.items()}
    best = max(scores, key=lambda e: scores[e])
    if scores[best] == 0:
        return Emotion.NEUTRAL
    if best is Emotion.HAPPY and "!" in text and scores[Emotion.HAPPY] >= 2:
        return Emotion.EXCITED
    return best


def strip_markup(text: str) -> str:
    """Remove thinking blocks and emotion tags from a complete text (for history and summaries)."""
    parser = ReplyParser()
    _, head = parser.feed(text)
    _, tail = parser.finish()
    return (head + tail).strip()


def _partial_suffix(text: str, needles: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``needles``."""
    lowered = text.lower()
    best = 0
    for needle in needles:
        for n in range(min(len(needle) - 1, len(lowered)), 0, -1):
            if lowered.endswith(needle[:n]):
                best = max(best, n)
                break
    return best


class ReplyParser:
    """Streaming filter: thinking blocks out, emotion decided first, tags never released.

    ``feed`` and ``finish`` return ``(emotion, text)``: ``emotion`` is set exactly once, on the call
    that first releases anything (or at ``finish``), and ``text`` is clean text safe to show and speak.
    """

    def __init__(self) -> None:
        self._pending = ""  # raw text not yet through the thinking filter
        self._in_think = False
        self._released_any = False
        self._head = ""  # visible text before the emotion is decided
        self._tail = ""  # visible text held back for a possible inline tag
        self._ends_in_space = False
        self.emotion: Emotion | None = None
        self.tagged = False

    def feed(self, delta: str) -> tuple[Emotion | None, str]:
        visible = self._filter_think(delta, final=False)
        return self._after_think(visible, final=False)

    def finish(self) -> tuple[Emotion | None, str]:
        visible = self._filter_think("", final=True)
        return self._after_think(visible, final=True)

    # --- stage 1: reasoning blocks --------------------------------------------------------------

    def _filter_think(self, delta: str, *, final: bool) -> str:
        self._pending += delta
        out: list[str] = []
        while self._pending:
            lowered = self._pending.lower()
            if self._in_think:
                idx, tag = min(((lowered.find(t), t) for t in _CLOSE_THINK if t in lowered), default=(-1, ""))
                if idx < 0:
                    keep = 0 if final else _partial_suffix(self._pending, _CLOSE_THINK)
                    self._pending = self._pending[len(self._pending) - keep :] if keep else ""
                    break
                self._pending = self._pending[idx + len(tag) :]
                self._in_think = False
                continue
            hits = [(lowered.find(t), t) for t in _ALL_THINK if t in lowered]
            if not hits:
                keep = 0 if final else _partial_suffix(self._pending, _ALL_THINK)
                cut = len(self._pending) - keep
                out.append(self._pending[:cut])
                self._pending = self._pending[cut:]
                break
            idx, tag = min(hits)
            before = self._pending[:idx]
            self._pending = self._pending[idx + len(tag) :]
            if tag in _OPEN_THINK:
                out.append(before)
                self._in_think = True
            elif not self._released_any and self.emotion is None:
                # A reasoning model whose template opened <think> in the prompt: all before the
                # close tag was thought, provided nothing has been released yet.
                self._head = ""
                out.clear()
            else:
                out.append(before)  # a stray close tag: drop the tag only
        return "".join(out)

    # --- stage 2: the emotion, then inline tags -------------------------------------------------

    def _after_think(self, visible: str, *, final: bool) -> tuple[Emotion | None, str]:
        if self.emotion is None:
            self._head += visible
            decided = self._decide(final=final)
            if decided is None:
                return None, ""
            self.emotion, rest = decided
            text = self._inline(rest, final=final)
            self._released_any = self._released_any or bool(text)
            return self.emotion, text
        text = self._inline(visible, final=final)
        self._released_any = self._released_any or bool(text)
        return None, text

    def _decide(self, *, final: bool) -> tuple[Emotion, str] | None:
        head = self._head.lstrip()
        if not head:
            return (Emotion.NEUTRAL, "") if final else None
        match = _LEAD_TAG.match(head)
        if match:
            label = match.group(1) or match.group(2) or ""
            rest = head[match.end() :]
            known = Emotion.label(label) if label else None
            if known is not None:
                self.tagged = True
                return known, rest
            # A bracketed stage direction such as "[smiles]": drop it and guess from the words.
            self._head = rest
            return self._decide(final=final)
        if head[0] in _OPENERS and len(head) < _TAG_WINDOW and not final:
            return None  # maybe a tag still being written
        if head[0] in _OPENERS and not _LEAD_TAG.match(head):
            # Garbled (unclosed) tag: drop the opener and the word glued to it; a cut-off label
            # ("[hap") still names its emotion.
            garbled = re.match(r"^[\[(<*]+\s*([A-Za-z]*)\s*[:\])>*]*\s*", head)
            assert garbled is not None
            word = garbled.group(1).lower()
            head = head[garbled.end() :]
            for emotion in Emotion:
                if len(word) >= 3 and emotion.value.startswith(word):
                    self.tagged = True
                    return emotion, head
        clause = _CLAUSE_END.search(head)
        if clause is None and len(head) < _HEAD_LIMIT and not final:
            return None
        return guess_emotion(head), head

    def _inline(self, text: str, *, final: bool) -> str:
        buf = self._tail + text
        self._tail = ""
        buf = _INLINE_TAG.sub("", buf)
        if not final:
            start = buf.rfind("[")
            if start >= 0 and "]" not in buf[start:] and len(buf) - start < 16:
                self._tail = buf[start:]
                buf = buf[:start]
        if not self._released_any or self._ends_in_space:
            buf = buf.lstrip()
        if buf:
            self._ends_in_space = buf[-1].isspace()
        return buf
