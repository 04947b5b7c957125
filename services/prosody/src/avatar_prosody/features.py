"""Acoustic features of one utterance: Praat (through Parselmouth) and openSMILE eGeMAPSv02.

Every function here is synchronous and CPU bound; callers run it in a worker pool.

Praat features (names carry their unit):

* ``f0_mean_hz``, ``f0_median_hz``, ``f0_p5_hz``, ``f0_p95_hz``: pitch over voiced frames.
* ``f0_range_st``: 5th to 95th percentile of F0 in semitones (robust to octave errors).
* ``f0_mean_st`` and ``f0_sd_st``: mean and standard deviation of F0 in semitones re 100 Hz.
* ``jitter_local``, ``shimmer_local``: cycle-to-cycle period and amplitude perturbation (fractions).
* ``hnr_db``: mean harmonics-to-noise ratio over voiced frames.
* ``intensity_mean_db``, ``intensity_sd_db``: intensity (dB re 2e-5 with full scale = 1 Pa) over
  sounding frames.
* ``syllable_count``, ``speech_rate_sps`` (per second of speaking span), ``articulation_rate_sps``
  (per second of sounding time): syllable nuclei are intensity peaks that stand out of their dip by
  2 dB, lie above the silence threshold and are voiced (after de Jong & Wempe, 2009).
* ``pause_count``, ``pause_total_s``, ``pause_ratio`` (pause time / speaking span), ``mean_pause_s``:
  silences of at least 0.25 s between the first and last sounding frame.
* ``voiced_fraction``: voiced frames / sounding frames (low for noise and music-like input).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import parselmouth
from parselmouth.praat import call

FloatArray = npt.NDArray[np.float64]
Features = dict[str, float | str | None]

PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
FRAME_STEP_S = 0.01
#: Frames quieter than the loudest frame minus this are silence (Praat's usual speech setting).
SILENCE_BELOW_MAX_DB = 25.0
MIN_DIP_DB = 2.0
MIN_PAUSE_S = 0.25
EGEMAPS_PREFIX = "egemaps."

_local = threading.local()


def _smile() -> Any:
    """One openSMILE extractor per thread (and so per worker process), built on first use."""
    smile = getattr(_local, "smile", None)
    if smile is None:
        import opensmile  # local: loading the native library is deferred to the first analysis

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        _local.smile = smile
    return smile


def egemaps_functionals(samples: npt.NDArray[np.float32], sample_rate: int) -> Features:
    """The 88 eGeMAPSv02 functionals, keys prefixed with ``egemaps.``."""
    frame = _smile().process_signal(samples, sample_rate)
    row = frame.iloc[0]
    return {EGEMAPS_PREFIX + str(name): _finite(float(value)) for name, value in row.items()}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _semitones(hz: FloatArray, ref: float = 100.0) -> FloatArray:
    return np.asarray(12.0 * np.log2(hz / ref), dtype=np.float64)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, end) index pairs of consecutive True values, end exclusive."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _syllable_nuclei(intensity: FloatArray, threshold: float, voiced: npt.NDArray[np.bool_]) -> int:
    peaks = [
        i
        for i in range(1, len(intensity) - 1)
        if intensity[i] >= intensity[i - 1] and intensity[i] > intensity[i + 1] and intensity[i] > threshold
    ]
    count = 0
    last: int | None = None
    for i in peaks:
        if not voiced[i]:
            continue
        if last is not None:
            dip = float(np.min(intensity[last : i + 1]))
            if intensity[i] - dip < MIN_DIP_DB:
                # Same syllable: keep the louder peak as its nucleus.
                if intensity[i] > intensity[last]:
                    last = i
                continue
        count += 1
        last = i
    return count


def praat_features(samples: npt.NDArray[np.float32], sample_rate: int) -> Features:
    """Pitch, voice quality, intensity, rate and pause features (see the module docstring)."""
    sound = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=float(sample_rate))
    features: Features = {}

    pitch = sound.to_pitch_ac(
        time_step=FRAME_STEP_S, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
    )
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    pitch_times = np.asarray(pitch.xs(), dtype=np.float64)
    voiced_f0 = f0[f0 > 0]
    if voiced_f0.size:
        st = _semitones(voiced_f0)
        p5, p95 = np.percentile(voiced_f0, [5, 95])
        features.update(
            f0_mean_hz=float(voiced_f0.mean()),
            f0_median_hz=float(np.median(voiced_f0)),
            f0_p5_hz=float(p5),
            f0_p95_hz=float(p95),
            f0_range_st=float(12.0 * math.log2(p95 / p5)),
            f0_mean_st=float(st.mean()),
            f0_sd_st=float(st.std()),
        )
    else:
        for key in (
            "f0_mean_hz",
            "f0_median_hz",
            "f0_p5_hz",
            "f0_p95_hz",
            "f0_range_st",
            "f0_mean_st",
            "f0_sd_st",
        ):
            features[key] = None
    features["voiced_duration_s"] = float(voiced_f0.size * FRAME_STEP_S)

    if voiced_f0.size >= 3:
        points = call(sound, "To PointProcess (periodic, cc)", PITCH_FLOOR_HZ, PITCH_CEILING_HZ)
        jitter = call(points, "Get jitter (local)", 0.0, 0.0, 0.0001, 0.02, 1.3)
        shimmer = call([sound, points], "Get shimmer (local)", 0.0, 0.0, 0.0001, 0.02, 1.3, 1.6)
        features["jitter_local"] = _finite(float(jitter))
        features["shimmer_local"] = _finite(float(shimmer))
        # HNR is the costliest Praat step; a 20 ms step and a 75 Hz floor halve it for a mean value.
        harmonicity = sound.to_harmonicity_cc(time_step=2 * FRAME_STEP_S, minimum_pitch=75.0)
        hnr = np.asarray(harmonicity.values, dtype=np.float64).reshape(-1)
        hnr = hnr[hnr > -199.0]  # Praat marks unvoiced frames with -200 dB
        features["hnr_db"] = float(hnr.mean()) if hnr.size else None
    else:
        features.update(jitter_local=None, shimmer_local=None, hnr_db=None)

    intensity_obj = sound.to_intensity(minimum_pitch=100.0, time_step=FRAME_STEP_S)
    intensity = np.asarray(intensity_obj.values, dtype=np.float64).reshape(-1)
    times = np.asarray(intensity_obj.xs(), dtype=np.float64)
    if intensity.size == 0:
        intensity = np.full(1, -math.inf)
        times = np.zeros(1)
    threshold = float(np.max(intensity)) - SILENCE_BELOW_MAX_DB
    sounding = intensity > threshold
    # Voicing of each intensity frame, from the nearest pitch frame.
    if pitch_times.size:
        nearest = np.clip(np.searchsorted(pitch_times, times), 0, pitch_times.size - 1)
        voiced = f0[nearest] > 0
    else:
        voiced = np.zeros(intensity.size, dtype=bool)

    loud = intensity[sounding]
    features["intensity_mean_db"] = float(loud.mean()) if loud.size else None
    features["intensity_sd_db"] = float(loud.std()) if loud.size else None
    idx = np.flatnonzero(sounding)
    span_s = float((idx[-1] - idx[0] + 1) * FRAME_STEP_S) if idx.size else 0.0
    sounding_s = float(idx.size * FRAME_STEP_S)
    features["speech_span_s"] = span_s
    features["voiced_fraction"] = float(np.count_nonzero(voiced & sounding) / idx.size) if idx.size else 0.0

    syllables = _syllable_nuclei(intensity, threshold, voiced)
    features["syllable_count"] = float(syllables)
    features["speech_rate_sps"] = syllables / span_s if span_s > 0 else None
    features["articulation_rate_sps"] = syllables / sounding_s if sounding_s > 0 else None

    pauses: list[float] = []
    if idx.size:
        inner = ~sounding[idx[0] : idx[-1] + 1]
        pauses = [(b - a) * FRAME_STEP_S for a, b in _runs(inner) if (b - a) * FRAME_STEP_S >= MIN_PAUSE_S]
    features["pause_count"] = float(len(pauses))
    features["pause_total_s"] = float(sum(pauses))
    features["pause_ratio"] = float(sum(pauses) / span_s) if span_s > 0 else None
    features["mean_pause_s"] = float(np.mean(pauses)) if pauses else 0.0
    return features
