"""AVATAR prosody analysis: openSMILE eGeMAPSv02 + Praat features and explainable 0..100 scores."""

from avatar_prosody.analyzer import Analysis, BusyError, ProsodyEngine, analyze
from avatar_prosody.scoring import BASELINE_FEATURES, FORMULA, compute_scores

__all__ = [
    "BASELINE_FEATURES",
    "FORMULA",
    "Analysis",
    "BusyError",
    "ProsodyEngine",
    "analyze",
    "compute_scores",
]
