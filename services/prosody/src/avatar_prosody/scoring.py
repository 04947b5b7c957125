"""Explainable 0..100 scores from prosodic features (the formula is also in docs/prosody.md).

For each score ``s`` with terms ``(feature f_i, weight w_i, center c_i, spread d_i)``::

    z_i   = clip((x_i - center_i) / d_i, -3, 3)       # 0 when the feature is missing
    S     = sum_i w_i * z_i                            # sum of |w_i| is 1
    score = 100 / (1 + exp(-GAIN * S))                 # GAIN = 1.5; S = 0 gives 50

``center_i`` is the speaker's own mean of ``f_i`` over their earlier utterances this session (the
*baseline*) when one is given, else the population reference ``c_i`` below; terms whose reference
is ``None`` (absolute pitch, which depends on the speaker) count only against a baseline. The
spread ``d_i`` is a fixed typical within-speaker variation, not the session's own standard
deviation: over the handful of utterances of a session that estimate is too noisy and would make
scores jump (docs/design-notes.md §9, "unstable scores").

* **confidence**: louder (+0.30), wider pitch range (+0.25), faster speech (+0.20), fewer pauses
  (-0.25).
* **stability**: less jitter (-0.40), less shimmer (-0.30), more harmonic voice (+0.30).
* **affability**: livelier melody (F0 variation, +0.40), clearer voice (HNR, +0.30), higher pitch
  than the speaker's own usual (+0.30, baseline only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

GAIN = 1.5
Z_LIMIT = 3.0
NEUTRAL = 50.0


@dataclass(frozen=True, slots=True)
class Term:
    """One feature's contribution to a score.

    Attributes:
        feature: Feature name (see :mod:`avatar_prosody.features`).
        weight: Signed weight; the absolute weights of one score sum to 1.
        reference: Population center used without a baseline; ``None`` means "baseline only".
        spread: Typical within-speaker variation (the z-score unit).
        label: Words for the explanation.
    """

    feature: str
    weight: float
    reference: float | None
    spread: float
    label: str


FORMULA: dict[str, tuple[Term, ...]] = {
    "confidence": (
        Term("intensity_mean_db", 0.30, 62.0, 6.0, "loudness"),
        Term("f0_range_st", 0.25, 7.0, 3.0, "pitch range"),
        Term("speech_rate_sps", 0.20, 3.5, 1.0, "speaking rate"),
        Term("pause_ratio", -0.25, 0.15, 0.12, "pauses"),
    ),
    "stability": (
        Term("jitter_local", -0.40, 0.022, 0.01, "jitter"),
        Term("shimmer_local", -0.30, 0.11, 0.04, "shimmer"),
        Term("hnr_db", 0.30, 10.0, 4.0, "harmonics-to-noise ratio"),
    ),
    "affability": (
        Term("f0_sd_st", 0.40, 2.5, 1.2, "pitch variation"),
        Term("hnr_db", 0.30, 10.0, 4.0, "harmonics-to-noise ratio"),
        Term("f0_mean_st", 0.30, None, 2.0, "pitch above own usual"),
    ),
}

#: Every feature a score uses: the session baseline is the running mean of these.
BASELINE_FEATURES: tuple[str, ...] = tuple(sorted({t.feature for terms in FORMULA.values() for t in terms}))


@dataclass(frozen=True, slots=True)
class Scores:
    """The three scores with one explanation line each."""

    confidence: float
    stability: float
    affability: float
    explanation: dict[str, str]

    def as_dict(self) -> dict[str, float]:
        return {"confidence": self.confidence, "stability": self.stability, "affability": self.affability}


def _number(value: float | str | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def score_one(
    name: str, features: Mapping[str, float | str | None], baseline: Mapping[str, float] | None
) -> tuple[float, str]:
    """One score and its explanation (e.g. ``"50 + loudness z=+1.2 (w +0.30) ..."``)."""
    total = 0.0
    parts: list[str] = []
    for term in FORMULA[name]:
        x = _number(features.get(term.feature))
        base = _number(baseline.get(term.feature)) if baseline else None
        center = base if base is not None else term.reference
        if x is None or center is None:
            parts.append(f"{term.label} n/a")
            continue
        z = max(-Z_LIMIT, min(Z_LIMIT, (x - center) / term.spread))
        total += term.weight * z
        against = "own baseline" if base is not None else "reference"
        parts.append(f"{term.label} z={z:+.2f} vs {against} (w {term.weight:+.2f})")
    score = 100.0 / (1.0 + math.exp(-GAIN * total))
    return round(score, 1), f"S={total:+.2f}: " + "; ".join(parts)


def compute_scores(
    features: Mapping[str, float | str | None], baseline: Mapping[str, float] | None = None
) -> Scores:
    """Apply :data:`FORMULA` to ``features``, relative to ``baseline`` (feature means) if given."""
    values: dict[str, float] = {}
    explanation: dict[str, str] = {}
    for name in FORMULA:
        values[name], explanation[name] = score_one(name, features, baseline)
    return Scores(values["confidence"], values["stability"], values["affability"], explanation)


def neutral_scores(reason: str) -> Scores:
    """Scores of an unreliable utterance: 50 each, with the reason as explanation."""
    note = f"not scored: {reason}"
    return Scores(NEUTRAL, NEUTRAL, NEUTRAL, dict.fromkeys(FORMULA, note))
