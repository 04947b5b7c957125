"""Voice-profile use cases: the real sample decoder, in-memory fakes for storage, ASR and TTS."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
import wave
from collections.abc import Callable
from typing import cast

import numpy as np
import pytest
import soundfile as sf

from avatar.application.ports.asr import TranscriptionTask
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.ports.tts import VoiceReference
from avatar.application.voice_profiles import (
    ClippedSampleError,
    InvalidProfileFieldError,
    SampleTooLargeError,
    SampleTooLongError,
    SampleTooShortError,
    SilentSampleError,
    UnsupportedFormatError,
    VoiceProfileNotFoundError,
    VoiceProfileService,
    VoiceSampleError,
    voice_reference,
)
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.domain.models import SegmentTiming, Transcription, TTSMode
from avatar.infrastructure.speaker import VoiceSampleDecoder
from backend.tests.voice_profiles.speech import Clip
from tests.fakes import (
    FakeClock,
    FakeDatabase,
    FakeObjectStore,
    FakeRecognizer,
    FakeSpeakerEncoder,
    FakeSynthesizer,
)

STOCK_NOTICE = "this engine cannot clone voices; using the closest stock voice 'joe'"


def as_factory(db: FakeDatabase) -> UnitOfWorkFactory:
    # FakeUnitOfWork's repositories are concrete fakes; the port declares them as mutable protocol
    # attributes, which mypy treats as invariant. Structurally they match.
    return cast(UnitOfWorkFactory, db)


class Harness:
    def __init__(self, *, hq_notice: str | None = None, recognizer: FakeRecognizer | None = None) -> None:
        self.db = FakeDatabase()
        self.store = FakeObjectStore()
        self.recognizer = recognizer or FakeRecognizer(texts=("the quick brown fox",))
        self.encoder = FakeSpeakerEncoder()
        self.fast = FakeSynthesizer(TTSMode.FAST)
        self.hq = FakeSynthesizer(TTSMode.HQ, notice=hq_notice)
        self.service = VoiceProfileService(
            uow=as_factory(self.db),
            object_store=self.store,
            encoder=self.encoder,
            recognizer=self.recognizer,
            fast_tts=self.fast,
            hq_tts=self.hq,
            decoder=VoiceSampleDecoder(),
            clock=FakeClock(),
        )


def _wav(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _webm(wav: bytes) -> bytes:
    out = subprocess.run(
        "ffmpeg -loglevel error -f wav -i pipe:0 -c:a libopus -f webm pipe:1".split(),
        input=wav,
        capture_output=True,
        check=True,
    )
    return out.stdout


def _stretch(clip: Clip, seconds: float) -> np.ndarray:
    reps = int(np.ceil(seconds * clip.sample_rate / len(clip.samples)))
    return np.tile(clip.samples, reps)[: int(seconds * clip.sample_rate)]


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "webm"])
async def test_every_accepted_format_creates_a_profile(speakers: dict[str, list[Clip]], fmt: str) -> None:
    h = Harness()
    clip = speakers["joe"][0]
    data = _webm(clip.wav()) if fmt == "webm" else clip.encoded(fmt)
    profile = await h.service.create(audio=data, name=f"Joe {fmt}")
    expected = {"opus": "ogg"}.get(fmt, fmt)
    assert profile.metadata["source_format"] == expected
    assert profile.duration_sec == pytest.approx(clip.duration_s, abs=0.15)
    assert len(profile.embedding) == 256


async def test_create_stores_a_16_bit_wav_and_metadata_and_uses_asr_for_the_transcript(
    speakers: dict[str, list[Clip]],
) -> None:
    h = Harness()
    clip = speakers["reader"][0]
    stereo = np.stack([clip.samples, clip.samples], axis=1)
    profile = await h.service.create(audio=_wav(stereo, clip.sample_rate, "FLAC"), name="  Reader  ")

    assert profile.name == "Reader"
    assert profile.transcript == "the quick brown fox"
    assert profile.metadata["transcript_source"] == "asr"
    assert profile.metadata["source_channels"] == 2
    assert h.recognizer.transcribed == [(2 * len(clip.samples), clip.sample_rate)]
    prefix = f"voice_profiles/{profile.profile_id}/"
    assert await h.store.list_keys(prefix) == [prefix + "metadata.json", prefix + "original.wav"]
    assert profile.audio_url.endswith(prefix + "original.wav")

    with wave.open(io.BytesIO(await h.store.get(prefix + "original.wav"))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, clip.sample_rate)
        assert w.getnframes() == len(clip.samples)
    meta = json.loads(await h.store.get(prefix + "metadata.json"))
    assert meta["profile_id"] == str(profile.profile_id)
    assert meta["sample_rate"] == clip.sample_rate
    assert meta["duration_sec"] == pytest.approx(clip.duration_s, abs=0.01)
    assert meta["transcript"] == "the quick brown fox"

    assert await h.service.get(profile.profile_id) == profile
    assert await h.service.get(str(profile.profile_id)) == profile
    assert [p.profile_id for p in await h.service.list_profiles()] == [profile.profile_id]


async def test_a_given_transcript_is_kept_and_asr_is_not_called(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    profile = await h.service.create(
        audio=speakers["espeak_m3"][0].wav(), name="Robot", transcript="  The quick\nbrown fox.  "
    )
    assert profile.transcript == "The quick brown fox."
    assert profile.metadata["transcript_source"] == "given"
    assert h.recognizer.transcribed == []


async def test_unavailable_asr_still_creates_the_profile(speakers: dict[str, list[Clip]]) -> None:
    class DownRecognizer(FakeRecognizer):
        async def transcribe(
            self,
            pcm: bytes,
            sample_rate: int,
            *,
            language: str | None = None,
            prompt: str | None = None,
            temperature: float = 0.0,
            task: TranscriptionTask = "transcribe",
            on_segment: Callable[[SegmentTiming], None] | None = None,
        ) -> Transcription:
            raise DependencyError("asr service unreachable")

    h = Harness(recognizer=DownRecognizer())
    profile = await h.service.create(audio=speakers["joe"][1].wav(), name="Joe")
    assert profile.transcript == ""
    assert profile.metadata["transcript_source"] == "unavailable"


# --- validation -------------------------------------------------------------------------------


async def _refused(
    h: Harness, data: bytes, kind: type[VoiceSampleError], name: str = "x"
) -> VoiceSampleError:
    with pytest.raises(kind) as info:
        await h.service.create(audio=data, name=name)
    assert h.store.objects == {}
    assert h.db.tables.profiles == {}
    assert info.value.message
    return info.value


async def test_undecodable_uploads_are_unsupported_format(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    rng = np.random.default_rng(7)
    for data in (
        b"",
        b"Hello, this is a text file and not audio at all.\n" * 20,
        rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        speakers["joe"][0].wav()[:40],  # a WAV header with no audio
    ):
        err = await _refused(h, data, UnsupportedFormatError)
        assert err.code == "UNSUPPORTED_FORMAT"


async def test_decodable_but_unaccepted_containers_are_unsupported(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    clip = speakers["joe"][0]
    err = await _refused(h, _wav(clip.samples, clip.sample_rate, "AIFF"), UnsupportedFormatError)
    assert "aiff" in err.message


async def test_too_short_and_too_long(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    clip = speakers["espeak_f2"][0]
    short = await _refused(h, _wav(_stretch(clip, 3.0), clip.sample_rate), SampleTooShortError)
    assert short.code == "TOO_SHORT"
    long = await _refused(h, _wav(_stretch(clip, 31.0), clip.sample_rate), SampleTooLongError)
    assert long.code == "TOO_LONG"
    far_too_long = Clip("f2", _stretch(clip, 90.0), clip.sample_rate).encoded("mp3")
    assert (await _refused(h, far_too_long, SampleTooLongError)).code == "TOO_LONG"
    # The boundaries themselves are accepted.
    for seconds in (5.0, 30.0):
        await h.service.create(audio=_wav(_stretch(clip, seconds), clip.sample_rate), name=f"{seconds}")


async def test_too_large(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    clip = speakers["reader"][0]
    big = _wav(np.tile(clip.samples, 25)[:, None].repeat(2, axis=1), 48000, subtype="PCM_24")
    assert len(big) > h.service.limits.max_bytes
    assert (await _refused(h, big, SampleTooLargeError)).code == "TOO_LARGE"


async def test_silent_and_nearly_silent_samples(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    rate = 16000
    assert (await _refused(h, _wav(np.zeros(rate * 8), rate), SilentSampleError)).code == "SILENT"
    hiss = np.random.default_rng(1).normal(0, 10 ** (-65 / 20), rate * 8)
    await _refused(h, _wav(hiss, rate), SilentSampleError)
    faint = speakers["reader"][0].samples * 10 ** (-40 / 20)
    await _refused(h, _wav(faint, speakers["reader"][0].sample_rate), SilentSampleError)


async def test_clipped_sample(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    clip = speakers["reader"][1]
    overdriven = np.clip(clip.samples * 12.0, -1.0, 1.0)
    err = await _refused(h, _wav(overdriven, clip.sample_rate), ClippedSampleError)
    assert err.code == "CLIPPED"
    # A normal recording that touches full scale once is not "clipped".
    peaked = clip.samples / np.max(np.abs(clip.samples))
    await h.service.create(audio=_wav(peaked, clip.sample_rate), name="peaked")


async def test_missing_or_overlong_name_and_overlong_transcript(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    data = speakers["joe"][0].wav()
    for name in ("", "   \n"):
        with pytest.raises(InvalidProfileFieldError):
            await h.service.create(audio=data, name=name)
    with pytest.raises(InvalidProfileFieldError):
        await h.service.create(audio=data, name="n" * 101)
    with pytest.raises(InvalidProfileFieldError):
        await h.service.create(audio=data, name="ok", transcript="w " * 1500)
    assert h.store.objects == {}
    assert h.encoder.calls == 0


# --- delete, failures, references ---------------------------------------------------------------


async def test_delete_removes_row_and_every_object_and_then_404s(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    keep = await h.service.create(audio=speakers["joe"][0].wav(), name="keep")
    gone = await h.service.create(audio=speakers["reader"][0].wav(), name="gone")
    # Anything else stored under the profile's prefix goes too.
    await h.store.put(f"voice_profiles/{gone.profile_id}/derived/preview.wav", b"x")

    assert await h.service.delete(gone.profile_id) == 3
    assert await h.store.list_keys(f"voice_profiles/{gone.profile_id}/") == []
    assert gone.profile_id not in h.db.tables.profiles
    assert len(await h.store.list_keys(f"voice_profiles/{keep.profile_id}/")) == 2
    with pytest.raises(VoiceProfileNotFoundError):
        await h.service.delete(gone.profile_id)
    with pytest.raises(VoiceProfileNotFoundError):
        await h.service.get(gone.profile_id)
    with pytest.raises(InvalidInputError):
        await h.service.delete("not-a-uuid")


async def test_a_failed_database_write_leaves_no_objects(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    h.db.fail_next = 1
    with pytest.raises(ConnectionError):
        await h.service.create(audio=speakers["joe"][0].wav(), name="joe")
    assert h.store.objects == {}


async def test_voice_reference_carries_the_sample_transcript_and_embedding(
    speakers: dict[str, list[Clip]],
) -> None:
    h = Harness()
    clip = speakers["reader"][0]
    profile = await h.service.create(audio=clip.wav(), name="Reader", transcript="hello")
    ref = await voice_reference(as_factory(h.db), h.store, str(profile.profile_id))
    assert isinstance(ref, VoiceReference)
    assert ref.sample_rate == clip.sample_rate
    assert len(ref.pcm) == 2 * len(clip.samples)
    assert ref.transcript == "hello"
    assert ref.embedding == profile.embedding
    assert ref.profile_id == str(profile.profile_id)
    with pytest.raises(VoiceProfileNotFoundError):
        await voice_reference(as_factory(h.db), h.store, uuid.uuid4())


async def test_preview_passes_the_reference_and_surfaces_the_stock_voice_notice(
    speakers: dict[str, list[Clip]],
) -> None:
    h = Harness(hq_notice=STOCK_NOTICE)
    profile = await h.service.create(audio=speakers["joe"][0].wav(), name="Joe")
    preview = await h.service.preview(profile.profile_id, "Hello there, how are you?")
    assert preview.notice == STOCK_NOTICE
    assert (preview.engine, preview.voice, preview.mode) == ("fake", "fake-voice", TTSMode.HQ)
    request = h.hq.requests[0]
    assert request.reference is not None and request.reference.profile_id == str(profile.profile_id)
    assert request.text == "Hello there, how are you?"
    with wave.open(io.BytesIO(preview.wav)) as w:
        assert w.getframerate() == preview.sample_rate
        assert w.getnframes() > 0
    fast = await h.service.preview(profile.profile_id, "Quick one.", TTSMode.FAST)
    assert fast.notice is None and h.fast.requests[0].mode is TTSMode.FAST


async def test_preview_errors(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    profile = await h.service.create(audio=speakers["joe"][0].wav(), name="Joe")
    with pytest.raises(InvalidProfileFieldError):
        await h.service.preview(profile.profile_id, "   ")
    with pytest.raises(InvalidProfileFieldError):
        await h.service.preview(profile.profile_id, "a" * 501)
    with pytest.raises(VoiceProfileNotFoundError):
        await h.service.preview(uuid.uuid4(), "hello")
    h.hq.fail = True
    with pytest.raises(DependencyError):
        await h.service.preview(profile.profile_id, "hello")


async def test_search_validates_its_clip_and_limit(speakers: dict[str, list[Clip]]) -> None:
    h = Harness()
    clip = speakers["joe"][0]
    with pytest.raises(UnsupportedFormatError):
        await h.service.search(b"not audio")
    with pytest.raises(SampleTooShortError):
        await h.service.search(_wav(clip.samples[: clip.sample_rate], clip.sample_rate))
    with pytest.raises(InvalidInputError):
        await h.service.search(clip.wav(), limit=0)
    assert await h.service.search(_wav(_stretch(clip, 2.0), clip.sample_rate)) == []
