"""Fixtures: real speech from several distinct speakers (see speech.py)."""

from __future__ import annotations

import pytest

from backend.tests.voice_profiles.speech import Clip, make_speakers
from tests.support.audio import SpeechClip


@pytest.fixture(scope="session")
def speakers(librivox: list[SpeechClip]) -> dict[str, list[Clip]]:
    """Speaker name -> two clips of different text, each 5-30 s."""
    result = make_speakers(librivox)
    for clips in result.values():
        for clip in clips:
            assert 5.0 <= clip.duration_s <= 30.0, (clip.speaker, clip.duration_s)
    return result
