"""Pitch for engines that have no pitch control (Piper, Kokoro, espeak-ng): varispeed.

The engine is asked for ``speed / pitch``, then the audio is resampled to play ``pitch`` times
faster: the pitch rises by ``pitch`` and the duration comes back to what ``speed`` asked for.
Meant for small changes (0.8..1.25); formants move with the pitch, as on a tape.
"""

from __future__ import annotations

import numpy as np

from avatar_tts.engine import FloatAudio

MIN_PITCH = 0.5
MAX_PITCH = 2.0


def shift_pitch(audio: FloatAudio, pitch: float) -> FloatAudio:
    """``audio`` played ``pitch`` times faster (linear interpolation), at the same sample rate."""
    if pitch == 1.0 or audio.size < 2:
        return audio
    positions = np.arange(0.0, audio.size - 1, pitch)
    shifted: FloatAudio = np.interp(positions, np.arange(audio.size), audio).astype(np.float32)
    return shifted
