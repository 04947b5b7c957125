"""The real GE2E speaker encoder (resemblyzer, packaged weights) on real and synthetic speech."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from avatar.application.ports.speaker import SpeakerEncoder
from avatar.domain.errors import InvalidInputError
from avatar.infrastructure.speaker import ResemblyzerSpeakerEncoder, build_speaker_encoder
from avatar.settings import Settings
from avatar_common.audio import float_to_pcm16
from backend.tests.voice_profiles.speech import Clip


@pytest.fixture(scope="session")
async def encoder() -> ResemblyzerSpeakerEncoder:
    async with contextlib.AsyncExitStack() as stack:
        built = await build_speaker_encoder(Settings(_env_file=None), stack)
    return built


async def _embed(encoder: SpeakerEncoder, clip: Clip) -> np.ndarray:
    return np.asarray(await encoder.embed(float_to_pcm16(clip.samples), clip.sample_rate))


async def test_builder_resolves_the_packaged_weights_and_loads_lazily(
    encoder: ResemblyzerSpeakerEncoder,
) -> None:
    health = await encoder.health()
    assert health.ok, health.detail
    assert encoder.dim == 256


async def test_embeddings_are_256_dim_unit_vectors(
    encoder: ResemblyzerSpeakerEncoder, speakers: dict[str, list[Clip]]
) -> None:
    vec = await _embed(encoder, speakers["reader"][0])
    assert vec.shape == (256,)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    assert encoder.load_seconds is not None


async def test_same_speaker_is_closer_than_any_other_speaker(
    encoder: ResemblyzerSpeakerEncoder, speakers: dict[str, list[Clip]]
) -> None:
    first = {name: await _embed(encoder, clips[0]) for name, clips in speakers.items()}
    second = {name: await _embed(encoder, clips[1]) for name, clips in speakers.items()}
    for name in speakers:
        same = float(first[name] @ second[name])
        others = {other: float(first[name] @ second[other]) for other in speakers if other != name}
        assert same > max(others.values()), (name, same, others)


async def test_resampled_input_gives_the_same_voice(
    encoder: ResemblyzerSpeakerEncoder, speakers: dict[str, list[Clip]]
) -> None:
    from avatar_common.audio import resample

    clip = speakers["joe"][0]
    at_48k = Clip("joe", resample(clip.samples, clip.sample_rate, 48000), 48000)
    assert float(await _embed(encoder, clip) @ await _embed(encoder, at_48k)) > 0.95


async def test_silence_and_malformed_pcm_are_refused(encoder: ResemblyzerSpeakerEncoder) -> None:
    with pytest.raises(InvalidInputError) as silent:
        await encoder.embed(bytes(2 * 16000 * 3), 16000)
    assert silent.value.code == "NO_SPEECH"
    with pytest.raises(InvalidInputError):
        await encoder.embed(b"\x00\x01\x02", 16000)
    with pytest.raises(InvalidInputError):
        await encoder.embed(b"", 16000)
