"""Real speech for tests: the LibriVox utterances of Debian's ``pocketsphinx-testdata``."""

from __future__ import annotations

import pytest

from avatar.bench.speech import LIBRIVOX_DIR, SpeechClip, load_librivox

__all__ = ["LIBRIVOX_DIR", "SpeechClip", "librivox", "load_librivox"]


@pytest.fixture(scope="session")
def librivox() -> list[SpeechClip]:
    clips = load_librivox()
    if not clips:
        pytest.fail("pocketsphinx-testdata is not installed: run `make setup-test` (scripts/setup.sh)")
    return clips
