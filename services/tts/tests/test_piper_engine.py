"""The Piper engine's own loading: the packaged voice, its phoneme timing, a thread pool that yields."""

from __future__ import annotations

import numpy as np

from avatar_tts.engines.piper import PiperEngine, session_options

from .conftest import packaged_config


def test_the_voice_loads_with_a_non_spinning_thread_pool_and_keeps_its_phoneme_timing() -> None:
    """A spinning pool busy-waits between operators; with the model server writing at the same
    time on a small CPU the first chunk took ~1.4x longer (docs/adr/0014-voice-latency.md)."""
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    path = packaged_config().piper_model
    assert path is not None
    engine = PiperEngine(path)
    engine.load()
    try:
        session = engine._voice.session  # the session the engine built (not piper's default)
        assert (
            session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        )
        (voice,) = engine.voices()
        chunks = list(engine.synthesize("Hello there, my friend.", voice, language="en", speed=1.0))
        assert chunks and all(np.abs(c.audio).max() > 0.01 for c in chunks)
        spans = [s for c in chunks for s in c.phonemes]
        assert len(spans) >= 10  # the in-memory patch exposes each phoneme's samples
        assert sum(c.audio.size for c in chunks) / engine.sample_rate > 0.8
    finally:
        engine.unload()
