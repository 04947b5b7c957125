"""Controlled voice-like signals for tests, warm-up and benchmarks.

A glottal pulse train (with chosen F0 contour, jitter and shimmer) drives three formant resonators
(an /a/-like vowel); syllables are shaped by a raised-cosine envelope with short gaps, and an
optional longer pause sits in the middle. Every parameter moves one prosodic feature, so the
scoring formula's direction can be checked on known inputs.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FORMANTS_HZ = ((700.0, 110.0), (1220.0, 120.0), (2600.0, 160.0))


def _vocal_tract(rate: int, length_s: float = 0.04) -> npt.NDArray[np.float64]:
    """Impulse response of three cascaded two-pole formant resonators (truncated to ``length_s``)."""
    response = np.zeros(round(length_s * rate))
    response[0] = 1.0
    for freq, bandwidth in FORMANTS_HZ:
        r = math.exp(-math.pi * bandwidth / rate)
        a1, a2 = 2.0 * r * math.cos(2.0 * math.pi * freq / rate), -r * r
        out = np.zeros(response.size + 2)  # two leading zeros hold y[-1] and y[-2]
        for i, x in enumerate(response):
            out[i + 2] = (1.0 - r) * x + a1 * out[i + 1] + a2 * out[i]
        response = out[2:]
    return response


def synthetic_voice(
    seconds: float = 3.0,
    *,
    f0_hz: float = 140.0,
    f0_range_st: float = 4.0,
    jitter: float = 0.0,
    shimmer: float = 0.0,
    level_dbfs: float = -20.0,
    syllable_rate: float = 4.0,
    pause_s: float = 0.0,
    noise_dbfs: float = -65.0,
    sample_rate: int = 16000,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """A voiced, syllabic test signal.

    Args:
        seconds: Total length, pause included.
        f0_hz: Mean pitch.
        f0_range_st: Peak-to-peak excursion of the pitch contour in semitones.
        jitter: Standard deviation of each glottal period, relative to the period.
        shimmer: Standard deviation of each glottal pulse's amplitude, relative.
        level_dbfs: RMS level of the voiced parts.
        syllable_rate: Syllables per second (each 75 % voiced, 25 % gap).
        pause_s: Length of a silent pause in the middle.
        noise_dbfs: Level of a white noise floor (keeps the signal free of digital silence).
        sample_rate: Output rate.
        seed: Random seed (jitter, shimmer, noise).
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    pulses = np.zeros(n, dtype=np.float64)
    t = 0.0
    while True:
        # Pitch contour: two slow arches over the utterance, excursion f0_range_st peak to peak.
        phase = 2.0 * math.pi * t / max(seconds, 1e-3) * 2.0
        f = f0_hz * 2.0 ** (0.5 * f0_range_st * math.sin(phase) / 12.0)
        period = (1.0 / f) * (1.0 + jitter * float(rng.standard_normal()))
        t += max(period, 0.25 / f)
        i = round(t * sample_rate)
        if i >= n:
            break
        pulses[i] = 1.0 + shimmer * float(rng.standard_normal())
    voice = np.convolve(pulses, _vocal_tract(sample_rate))[:n]

    times = np.arange(n) / sample_rate
    syllable = 1.0 / syllable_rate
    pos = (times % syllable) / syllable
    envelope = np.where(pos < 0.75, np.sin(np.pi * np.clip(pos / 0.75, 0.0, 1.0)) ** 0.5, 0.0)
    if pause_s > 0:
        mid = seconds / 2.0
        envelope[(times > mid - pause_s / 2) & (times < mid + pause_s / 2)] = 0.0
    voice *= envelope
    active = envelope > 0.1
    rms = float(np.sqrt(np.mean(voice[active] ** 2))) if np.any(active) else 1.0
    voice *= 10.0 ** (level_dbfs / 20.0) / max(rms, 1e-12)
    voice += 10.0 ** (noise_dbfs / 20.0) * rng.standard_normal(n)
    return np.clip(voice, -1.0, 1.0).astype(np.float32)
