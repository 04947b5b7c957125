"""Voice profiles: upload a voice sample, embed it, search by it, speak with it.

The flow is docs/design-notes.md §4 (data: §5, API: §6).

The use cases work on PCM16 mono audio. Decoding an upload and measuring it (loudness, clipping)
is number crunching done by an :class:`AudioClipDecoder` adapter; the *policy* (which formats,
how long, how loud) lives here in :class:`VoiceSampleLimits`.

Object layout per profile: ``voice_profiles/{profile_id}/original.wav`` (16-bit mono WAV of the
decoded sample) and ``voice_profiles/{profile_id}/metadata.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from avatar.application.ports.asr import SpeechRecognizer
from avatar.application.ports.clock import Clock
from avatar.application.ports.speaker import SpeakerEncoder
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest, VoiceReference
from avatar.application.validation import sanitize_text
from avatar.domain.errors import AvatarError, DependencyError, InvalidInputError, NotFoundError
from avatar.domain.models import TTSMode, User, VoiceProfile, new_id
from avatar.domain.storage_keys import voice_profile_key, voice_profile_prefix
from avatar.domain.wav import pcm16_wav, wav_pcm16

log = logging.getLogger(__name__)

#: Container formats a voice sample may come in (docs/design-notes.md §4).
ACCEPTED_FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "webm")


# --- errors -----------------------------------------------------------------------------------


class VoiceSampleError(InvalidInputError):
    """An uploaded voice sample cannot be used; ``code`` says why."""

    code = "INVALID_VOICE_SAMPLE"


class UnsupportedFormatError(VoiceSampleError):
    code = "UNSUPPORTED_FORMAT"


class SampleTooShortError(VoiceSampleError):
    code = "TOO_SHORT"


class SampleTooLongError(VoiceSampleError):
    code = "TOO_LONG"


class SampleTooLargeError(VoiceSampleError):
    code = "TOO_LARGE"


class SilentSampleError(VoiceSampleError):
    code = "SILENT"


class ClippedSampleError(VoiceSampleError):
    code = "CLIPPED"


class InvalidProfileFieldError(InvalidInputError):
    """A name, transcript or preview text that is empty or too long."""

    code = "INVALID_FIELD"


class VoiceProfileNotFoundError(NotFoundError):
    code = "VOICE_PROFILE_NOT_FOUND"


# --- the decoder port ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedClip:
    """A decoded upload as mono PCM16 with the measurements validation needs.

    Attributes:
        pcm: Little-endian signed 16-bit mono samples at ``sample_rate``.
        sample_rate: The source's sample rate (not resampled).
        source_format: Container as detected from the bytes (``wav``, ``flac``, ``mp3``, ``ogg``,
            ``webm``, or whatever else the decoder recognized).
        source_channels: Channel count before the mix-down to mono.
        duration_s: Length in seconds.
        rms_dbfs: Loudness of the whole clip in dB relative to full scale (``-inf`` when silent).
        clipping_ratio: Fraction of samples at full scale (before conversion to 16 bits).
    """

    pcm: bytes
    sample_rate: int
    source_format: str
    source_channels: int
    duration_s: float
    rms_dbfs: float
    clipping_ratio: float


class AudioClipDecoder(Protocol):
    """Decodes an uploaded audio file of any container to mono PCM16 and measures it."""

    async def decode(self, data: bytes, *, max_seconds: float) -> DecodedClip:
        """Decode ``data``.

        Raises:
            UnsupportedFormatError: the bytes are not decodable audio.
            SampleTooLongError: the audio runs longer than ``max_seconds`` (decoding stops early).
        """
        ...


# --- policy and results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoiceSampleLimits:
    """What a usable voice sample looks like (docs/design-notes.md §4: 5-30 s)."""

    min_seconds: float = 5.0
    max_seconds: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    #: Whole-clip loudness below this is treated as silence.
    silence_dbfs: float = -45.0
    #: More than this fraction of samples at full scale means the recording is clipped.
    max_clipping_ratio: float = 0.005
    #: A similar-voice search clip may be shorter than a profile sample.
    search_min_seconds: float = 1.5
    max_name_chars: int = 100
    max_transcript_chars: int = 2000
    max_preview_chars: int = 500
    max_search_results: int = 50


@dataclass(frozen=True, slots=True)
class PreviewAudio:
    """A synthesized preview and how it was made.

    Attributes:
        wav: 16-bit mono WAV bytes.
        engine: The TTS engine that spoke.
        voice: The voice actually used (a stock voice when the engine could not clone).
        notice: Set when the request was not honoured as asked, e.g. a stock voice substituted.
        mode: The tier used.
    """

    wav: bytes
    sample_rate: int
    duration_s: float
    engine: str
    voice: str
    notice: str | None
    mode: TTSMode


@dataclass(frozen=True, slots=True)
class SimilarVoice:
    profile: VoiceProfile
    similarity: float


def original_key(profile_id: uuid.UUID) -> str:
    return voice_profile_key(profile_id, "original.wav")


def metadata_key(profile_id: uuid.UUID) -> str:
    return voice_profile_key(profile_id, "metadata.json")


def profile_prefix(profile_id: uuid.UUID) -> str:
    return voice_profile_prefix(profile_id)


def parse_profile_id(raw: uuid.UUID | str) -> uuid.UUID:
    """Accept a UUID or its text form.

    Raises:
        InvalidInputError: ``raw`` is not a UUID.
    """
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise InvalidInputError(f"{raw!r} is not a valid voice profile id", code="INVALID_ID") from exc


def _clean_text(value: str | None, field: str, limit: int, *, required: bool) -> str:
    if value and sanitize_text(value) != value:
        raise InvalidProfileFieldError(f"{field} must not contain NUL characters or unpaired surrogates")
    text = " ".join((value or "").split())
    if required and not text:
        raise InvalidProfileFieldError(f"{field} must not be empty")
    if len(text) > limit:
        raise InvalidProfileFieldError(f"{field} is longer than {limit} characters")
    return text


# --- use cases --------------------------------------------------------------------------------


class VoiceProfileService:
    """The voice-profile use cases over the ports they need."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        object_store: ObjectStore,
        encoder: SpeakerEncoder,
        recognizer: SpeechRecognizer,
        fast_tts: SpeechSynthesizer,
        hq_tts: SpeechSynthesizer,
        decoder: AudioClipDecoder,
        clock: Clock,
        limits: VoiceSampleLimits | None = None,
    ) -> None:
        self._uow = uow
        self._store = object_store
        self._encoder = encoder
        self._recognizer = recognizer
        self._tts = {TTSMode.FAST: fast_tts, TTSMode.HQ: hq_tts}
        self._decoder = decoder
        self._clock = clock
        self.limits = limits or VoiceSampleLimits()

    async def _decode(self, data: bytes, *, min_seconds: float, check_clipping: bool) -> DecodedClip:
        lim = self.limits
        if not data:
            raise UnsupportedFormatError("the audio file is empty")
        if len(data) > lim.max_bytes:
            raise SampleTooLargeError(
                f"the audio file is {len(data) / 1e6:.1f} MB; the limit is {lim.max_bytes / 1e6:.0f} MB"
            )
        clip = await self._decoder.decode(data, max_seconds=lim.max_seconds)
        if clip.source_format not in ACCEPTED_FORMATS:
            raise UnsupportedFormatError(
                f"unsupported file format {clip.source_format!r}; use one of {', '.join(ACCEPTED_FORMATS)}"
            )
        if clip.duration_s > lim.max_seconds:
            raise SampleTooLongError(
                f"the sample is {clip.duration_s:.1f} s long; at most {lim.max_seconds:.0f} s is accepted"
            )
        if clip.duration_s < min_seconds:
            raise SampleTooShortError(
                f"the sample is {clip.duration_s:.1f} s long; at least {min_seconds:g} s is needed"
            )
        if not clip.rms_dbfs > lim.silence_dbfs:  # also catches -inf and NaN
            raise SilentSampleError(
                f"the sample is silent or too quiet ({clip.rms_dbfs:.0f} dBFS); "
                "record closer to the microphone"
            )
        if check_clipping and clip.clipping_ratio > lim.max_clipping_ratio:
            raise ClippedSampleError(
                f"{100 * clip.clipping_ratio:.1f} % of the sample is clipped; record at a lower input level"
            )
        return clip

    async def _transcribe(self, clip: DecodedClip) -> tuple[str, str]:
        try:
            result = await self._recognizer.transcribe(clip.pcm, clip.sample_rate)
        except DependencyError as exc:
            # The transcript only helps a cloning engine; a profile without one is still usable.
            log.warning("voice profile transcript unavailable: %s", exc.message)
            return "", "unavailable"
        text = " ".join(sanitize_text(result.text).split())
        return text[: self.limits.max_transcript_chars], "asr"

    async def create(
        self,
        *,
        audio: bytes,
        name: str,
        transcript: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> VoiceProfile:
        """Validate a sample, store it, embed it and record the profile.

        Raises:
            VoiceSampleError: a subclass naming what is wrong with the audio.
            InvalidProfileFieldError: empty or overlong name or transcript.
        """
        lim = self.limits
        clean_name = _clean_text(name, "name", lim.max_name_chars, required=True)
        given = _clean_text(transcript, "transcript", lim.max_transcript_chars, required=False)
        clip = await self._decode(audio, min_seconds=lim.min_seconds, check_clipping=True)

        if given:
            embedding = await self._encoder.embed(clip.pcm, clip.sample_rate)
            text, source = given, "given"
        else:
            embedding, (text, source) = await asyncio.gather(
                self._encoder.embed(clip.pcm, clip.sample_rate), self._transcribe(clip)
            )

        profile_id = new_id()
        created = self._clock.now()
        metadata: dict[str, object] = {
            "sample_rate": clip.sample_rate,
            "source_format": clip.source_format,
            "source_channels": clip.source_channels,
            "source_bytes": len(audio),
            "rms_dbfs": round(clip.rms_dbfs, 2),
            "clipping_ratio": round(clip.clipping_ratio, 6),
            "transcript_source": source,
        }
        wav_url = await self._store.put(
            original_key(profile_id), pcm16_wav(clip.pcm, clip.sample_rate), "audio/wav"
        )
        try:
            document = {
                "profile_id": str(profile_id),
                "name": clean_name,
                "duration_sec": round(clip.duration_s, 3),
                "transcript": text,
                "created_at": created.isoformat(),
                "embedding_dim": len(embedding),
                **metadata,
            }
            body = json.dumps(document, ensure_ascii=False).encode()
            await self._store.put(metadata_key(profile_id), body, "application/json")
            profile = VoiceProfile(
                profile_id=profile_id,
                name=clean_name,
                audio_url=wav_url,
                embedding=tuple(embedding),
                duration_sec=round(clip.duration_s, 3),
                sample_rate=clip.sample_rate,
                transcript=text,
                user_id=user_id,
                metadata=metadata,
                created_at=created,
            )
            async with self._uow() as uow:
                await uow.voice_profiles.add(profile)
                await uow.commit()
        except BaseException:
            # Compensate so a failed create leaves no orphaned objects behind.
            try:
                await asyncio.shield(self._store.delete_prefix(profile_prefix(profile_id)))
            except Exception:
                log.exception("could not remove the objects of the failed voice profile %s", profile_id)
            raise
        return profile

    async def list_profiles(self, owner_id: uuid.UUID | None = None) -> list[VoiceProfile]:
        """Every profile, or only ``owner_id``'s."""
        async with self._uow() as uow:
            profiles = await uow.voice_profiles.list(owner_id)
        return sorted(profiles, key=lambda p: (p.created_at is None, p.created_at), reverse=True)

    async def get(self, profile_id: uuid.UUID | str, viewer: User | None = None) -> VoiceProfile:
        """Raises ``VoiceProfileNotFoundError`` for an unknown id, or one ``viewer`` may not see."""
        pid = parse_profile_id(profile_id)
        async with self._uow() as uow:
            profile = await uow.voice_profiles.get(pid)
        if profile is None or (viewer is not None and not viewer.may_see(profile.user_id)):
            raise VoiceProfileNotFoundError(f"voice profile {pid} not found")
        return profile

    async def delete(self, profile_id: uuid.UUID | str, viewer: User | None = None) -> int:
        """Delete the row and every stored object of a profile; returns how many objects went.

        The objects are removed inside the transaction, before the commit: if removing them
        fails the row stays, so the delete can be retried and nothing is left half-referenced.
        """
        pid = (await self.get(profile_id, viewer)).profile_id if viewer else parse_profile_id(profile_id)
        async with self._uow() as uow:
            if not await uow.voice_profiles.delete(pid):
                raise VoiceProfileNotFoundError(f"voice profile {pid} not found")
            removed = await self._store.delete_prefix(profile_prefix(pid))
            await uow.commit()
        return removed

    async def original_audio(self, profile_id: uuid.UUID | str, viewer: User | None = None) -> bytes:
        """The stored sample as WAV bytes."""
        profile = await self.get(profile_id, viewer)
        try:
            return await self._store.get(original_key(profile.profile_id))
        except NotFoundError as exc:
            raise VoiceProfileNotFoundError(
                f"the audio of voice profile {profile.profile_id} is missing"
            ) from exc

    async def preview(
        self,
        profile_id: uuid.UUID | str,
        text: str,
        mode: TTSMode = TTSMode.HQ,
        viewer: User | None = None,
    ) -> PreviewAudio:
        """Speak ``text`` in the profile's voice (or the closest stock voice, with a notice)."""
        if viewer is not None:
            await self.get(profile_id, viewer)
        spoken = _clean_text(text, "text", self.limits.max_preview_chars, required=True)
        reference = await voice_reference(self._uow, self._store, profile_id)
        synthesizer = self._tts[mode]
        try:
            request = SynthesisRequest(text=spoken, mode=mode, reference=reference)
            stream = await synthesizer.synthesize(request)
        except AvatarError:
            raise
        except Exception as exc:
            raise DependencyError(f"speech synthesis ({mode.value}) failed: {exc}") from exc
        parts: list[bytes] = []
        try:
            async for chunk in stream.chunks():
                if chunk.sample_rate != stream.sample_rate:
                    raise DependencyError("the synthesizer changed sample rate mid-stream")
                parts.append(chunk.pcm)
        except AvatarError:
            await stream.aclose()
            raise
        except Exception as exc:
            await stream.aclose()
            raise DependencyError(f"speech synthesis ({mode.value}) failed: {exc}") from exc
        pcm = b"".join(parts)
        return PreviewAudio(
            wav=pcm16_wav(pcm, stream.sample_rate),
            sample_rate=stream.sample_rate,
            duration_s=len(pcm) / 2 / stream.sample_rate,
            engine=stream.engine,
            voice=stream.voice,
            notice=stream.notice,
            mode=mode,
        )

    async def search(
        self, audio: bytes, limit: int = 5, owner_id: uuid.UUID | None = None
    ) -> list[SimilarVoice]:
        """Stored profiles (only ``owner_id``'s when given) ordered by how much their speaker
        sounds like the clip's."""
        if not 1 <= limit <= self.limits.max_search_results:
            raise InvalidInputError(f"limit must be within 1..{self.limits.max_search_results}")
        clip = await self._decode(audio, min_seconds=self.limits.search_min_seconds, check_clipping=False)
        embedding = await self._encoder.embed(clip.pcm, clip.sample_rate)
        async with self._uow() as uow:
            # Typed here: the port's ``list`` method shadows the builtin in its own annotations.
            ranked: Sequence[tuple[VoiceProfile, float]] = await uow.voice_profiles.nearest(
                embedding, limit, owner_id
            )
        return [SimilarVoice(p, float(s)) for p, s in ranked]


async def voice_reference(
    uow_factory: UnitOfWorkFactory, object_store: ObjectStore, profile_id: uuid.UUID | str
) -> VoiceReference:
    """The reference a synthesizer needs to speak in a stored voice (sample, transcript, embedding).

    Used by the preview and by the conversation when ``set_tts_mode`` names a ``voice_profile_id``.

    Raises:
        InvalidInputError: ``profile_id`` is not a UUID.
        VoiceProfileNotFoundError: no such profile, or its sample is gone from the object store.
    """
    pid = parse_profile_id(profile_id)
    async with uow_factory() as uow:
        profile = await uow.voice_profiles.get(pid)
    if profile is None:
        raise VoiceProfileNotFoundError(f"voice profile {pid} not found")
    try:
        data = await object_store.get(original_key(pid))
    except NotFoundError as exc:
        raise VoiceProfileNotFoundError(f"the audio of voice profile {pid} is missing") from exc
    pcm, rate = wav_pcm16(data)
    return VoiceReference(
        pcm=pcm,
        sample_rate=rate,
        transcript=profile.transcript,
        embedding=profile.embedding,
        profile_id=str(pid),
    )


class StoredVoiceResolver:
    """The conversation's voice resolver over stored profiles: the cloning reference of a profile,
    or ``None`` when the profile or its sample is gone (the reply is then spoken in a stock voice)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, object_store: ObjectStore) -> None:
        self._uow = uow_factory
        self._store = object_store

    async def __call__(
        self, profile_id: uuid.UUID, session_id: uuid.UUID | None = None
    ) -> VoiceReference | None:
        if session_id is not None:
            # A conversation speaks only in its owner's voices (docs/security.md).
            async with self._uow() as uow:
                session = await uow.sessions.get(session_id)
                profile = await uow.voice_profiles.get(profile_id)
            if session is None or profile is None or profile.user_id != session.owner_id:
                return None
        try:
            return await voice_reference(self._uow, self._store, profile_id)
        except NotFoundError:
            return None
