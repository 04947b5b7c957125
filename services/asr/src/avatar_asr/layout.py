"""Where the speech of a clip is, and the clip with its long silences shortened (pure arithmetic).

Whole-file transcription (``service.py``) uses the VAD to *skip* silence, never to cut speech into
pieces decoded apart: the speech regions (padded) and every pause up to ``max_gap_s`` (also at the
start and the end) are kept as they are, longer pauses shrink to the regions' own padding, and
Whisper decodes the result once, each 30 s window seeing the text before it.
:meth:`SpeechLayout.to_source` maps a time of the
shortened clip back to the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatar_asr.config import SAMPLE_RATE
from avatar_asr.vad import FloatAudio, SpeechRegion


@dataclass(frozen=True, slots=True)
class Span:
    """``[source_start, source_end)`` of the original, placed at ``start`` of the shortened clip (s)."""

    source_start: float
    source_end: float
    start: float

    @property
    def length(self) -> float:
        return self.source_end - self.source_start


@dataclass(frozen=True, slots=True)
class SpeechLayout:
    """The kept spans of a clip, in order, and the original's duration."""

    spans: tuple[Span, ...]
    duration: float

    @classmethod
    def of(cls, regions: Sequence[SpeechRegion], duration: float, *, max_gap_s: float = 1.0) -> SpeechLayout:
        """Regions (already padded) merged across pauses of at most ``max_gap_s``; a leading or trailing
        silence that short is kept too (so a clip without long pauses is decoded exactly as it is)."""
        merged: list[tuple[float, float]] = []
        for r in sorted(regions, key=lambda r: r.start):
            start, end = max(0.0, r.start), min(duration, r.end)
            if end <= start:
                continue
            if merged and start - merged[-1][1] <= max_gap_s:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        if merged and merged[0][0] <= max_gap_s:
            merged[0] = (0.0, merged[0][1])
        if merged and duration - merged[-1][1] <= max_gap_s:
            merged[-1] = (merged[-1][0], duration)
        spans: list[Span] = []
        at = 0.0
        for start, end in merged:
            spans.append(Span(start, end, at))
            at += end - start
        return cls(tuple(spans), duration)

    @property
    def length(self) -> float:
        """Seconds of the shortened clip."""
        return sum(s.length for s in self.spans)

    def compact(self, samples: FloatAudio, rate: int = SAMPLE_RATE) -> FloatAudio:
        """The shortened clip: the kept spans of ``samples`` back to back."""
        pieces = [samples[round(s.source_start * rate) : round(s.source_end * rate)] for s in self.spans]
        return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)

    def to_source(self, t: float, *, end: bool = False) -> float:
        """The original time of ``t`` (seconds of the shortened clip).

        A time on the seam of two spans belongs to the earlier span when it ``end`` s something and
        to the later one when it starts something.
        """
        if not self.spans:
            return t
        chosen = self.spans[0]
        for span in self.spans:
            if t > span.start or (not end and t == span.start):
                chosen = span
            else:
                break
        offset = min(max(0.0, t - chosen.start), chosen.length)
        return round(chosen.source_start + offset, 3)
