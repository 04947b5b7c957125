"""Whisper's known outputs on silence and noise, and the rule for dropping them.

Whisper was trained on subtitled video, so on silence or noise it tends to "hear" the closing lines
of a video or the subtitle credits. Phrases that are almost never real speech in a conversation are
dropped whenever a whole segment is one of them; phrases that people do say ("thank you", "bye")
are dropped only when the decoder itself doubts there was speech.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ALWAYS = (
    # Korean
    "시청해주셔서 감사합니다",
    "시청해 주셔서 감사합니다",
    "시청해주셔서 고맙습니다",
    "구독과 좋아요 부탁드립니다",
    "구독과 좋아요",
    "구독 좋아요 알림설정",
    "다음 영상에서 만나요",
    "mbc 뉴스 이덕영입니다",
    "한글자막 by 한효정",
    "자막 제공 및 자막 편집",
    # English
    "thanks for watching",
    "thank you for watching",
    "thank you so much for watching",
    "thanks for watching and see you next time",
    "please subscribe",
    "please subscribe to my channel",
    "like and subscribe",
    "don't forget to like and subscribe",
    "subtitles by the amara.org community",
    "transcription by castingwords",
    "translated by",
    # Chinese
    "字幕由amara.org社区提供",
    "字幕by索兰娅",
    "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目",
    "谢谢观看",
    "感谢观看",
    "明镜与点点栏目",
    # Japanese
    "ご視聴ありがとうございました",
    "チャンネル登録よろしくお願いします",
)

_PATTERNS = (
    re.compile(r"^(subtitles?|captions?|captioning)\b.*\b(by|provided)\b"),
    re.compile(r"amara\.org"),
    re.compile(r"^자막"),
    re.compile(r"^字幕"),
)

_AMBIGUOUS = (
    "thank you",
    "thanks",
    "you",
    "bye",
    "bye bye",
    "okay",
    "감사합니다",
    "고맙습니다",
    "네",
    "谢谢",
    "ありがとうございました",
)


def normalize(text: str) -> str:
    """Lower case, NFKC, punctuation except ``.`` inside words removed, spaces collapsed."""
    t = unicodedata.normalize("NFKC", text).lower().strip()
    t = re.sub(r"[!?,;:\"'~\u2018\u2019\u201c\u201d\u2026\u3001\u3002\uff01\uff1f\u266a()\[\]-]+", " ", t)
    t = re.sub(r"\.(?=\s|$)", " ", t)
    return re.sub(r"\s+", " ", t).strip()


_ALWAYS_N = frozenset(normalize(p) for p in _ALWAYS)
_AMBIGUOUS_N = frozenset(normalize(p) for p in _AMBIGUOUS)


@dataclass(frozen=True, slots=True)
class SegmentEvidence:
    """What the filter looks at for one decoded segment."""

    text: str
    no_speech_prob: float
    avg_logprob: float


def is_hallucination(segment: SegmentEvidence) -> bool:
    """Whether a segment is one of Whisper's silence/noise fantasies rather than speech."""
    t = normalize(segment.text)
    if not t:
        return True
    if t in _ALWAYS_N or any(p.search(t) for p in _PATTERNS):
        return True
    if t in _AMBIGUOUS_N:
        return segment.no_speech_prob > 0.5 or segment.avg_logprob < -1.0
    return _is_repetition_loop(t)


def _is_repetition_loop(t: str) -> bool:
    """A segment that is one short phrase repeated many times (a decoder loop, not speech)."""
    words = t.split()
    if len(words) < 8:
        return False
    for n in range(1, 4):
        grams = [" ".join(words[i : i + n]) for i in range(0, len(words) - n + 1, n)]
        if grams and max(grams.count(g) for g in set(grams)) * n >= 0.8 * len(words):
            return True
    return False
