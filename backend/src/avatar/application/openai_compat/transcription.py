"""Transcription and translation of an uploaded file through the ``SpeechRecognizer`` port, as
OpenAI's ``/v1/audio/transcriptions`` and ``/v1/audio/translations`` need it (docs/openai.md).

The upload is decoded here (any container the decoder knows), then the whole clip goes to the
port's one-shot ``transcribe``: the embedded engine and the remote ASR service both skip silence
with the VAD and decode all the speech at once in context, so nothing is lost to our plumbing.
Silence is not an error for an OpenAI client: it is an empty transcript with the notice
``NO_SPEECH``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from avatar.application.ports.asr import SpeechRecognizer, TranscriptionTask
from avatar.application.voice_profiles import (
    AudioClipDecoder,
    DecodedClip,
    SampleTooLongError,
    VoiceSampleError,
)
from avatar.domain.errors import AvatarError, InvalidInputError
from avatar.domain.models import SegmentTiming, Transcription

NO_SPEECH = "NO_SPEECH"


class AudioTooLargeError(AvatarError):
    """The upload is larger or longer than the endpoint accepts (HTTP 413)."""

    code = "AUDIO_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class TranscriptionLimits:
    """What one upload may be (``settings.openai``)."""

    max_bytes: int = 25 * 1024 * 1024
    max_seconds: float = 900.0


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """OpenAI's request fields that reach the recognizer.

    Attributes:
        task: ``transcribe`` (in the spoken language) or ``translate`` (into English).
        language: ISO 639-1 code of the speech, or None to detect it.
        prompt: Text that came before (names, spelling, style).
        temperature: 0 = Whisper's fallback sequence; up to 1.
    """

    task: TranscriptionTask = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptOutcome:
    """A transcript and, when it is empty because nothing was said, the notice ``NO_SPEECH``."""

    transcription: Transcription
    duration_s: float
    notice: str | None = None


class FileTranscriber:
    """Decodes an uploaded audio file and transcribes (or translates) it whole."""

    def __init__(
        self, recognizer: SpeechRecognizer, decoder: AudioClipDecoder, limits: TranscriptionLimits
    ) -> None:
        self._recognizer = recognizer
        self._decoder = decoder
        self.limits = limits

    async def run(self, data: bytes, options: TranscriptionOptions) -> TranscriptOutcome:
        """Transcribe ``data`` (a whole audio file).

        Raises:
            AudioTooLargeError: the file is larger or longer than the limits.
            InvalidInputError: the bytes are not decodable audio, or an option is out of range.
            DependencyError, CapacityError: the recognizer cannot serve now.
        """
        return await self.transcribe(await self.decode(data, options), options)

    async def stream(
        self, clip: DecodedClip, options: TranscriptionOptions
    ) -> AsyncGenerator[str | TranscriptOutcome, None]:
        """The transcript of a decoded clip as it is decoded: text deltas (each segment as Whisper
        finishes it, spaced as the whole text is), then the :class:`TranscriptOutcome`. The decode
        is the same single call as :meth:`transcribe`, so the text is the same."""
        pieces: asyncio.Queue[SegmentTiming | None] = asyncio.Queue()
        task = asyncio.create_task(self.transcribe(clip, options, on_segment=pieces.put_nowait))
        task.add_done_callback(lambda _task: pieces.put_nowait(None))
        sent = ""
        try:
            while (segment := await pieces.get()) is not None:
                text = segment.text.strip()
                if text:
                    delta = text if not sent else " " + text
                    sent += delta
                    yield delta
            outcome = await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        full = outcome.transcription.text
        if full.startswith(sent) and full[len(sent) :]:
            yield full[len(sent) :]  # a recognizer that did not stream says it all at the end
        yield outcome

    async def decode(self, data: bytes, options: TranscriptionOptions) -> DecodedClip:
        """Check the limits and the options and decode the upload.

        Raises:
            AudioTooLargeError, InvalidInputError: as :meth:`run`.
        """
        limits = self.limits
        if len(data) > limits.max_bytes:
            raise AudioTooLargeError(f"the file is larger than {limits.max_bytes // (1024 * 1024)} MiB")
        if not data:
            raise InvalidInputError("the audio file is empty", code="EMPTY_AUDIO")
        if not 0.0 <= options.temperature <= 1.0:
            raise InvalidInputError("temperature must be within 0..1", code="INVALID_TEMPERATURE")
        try:
            clip = await self._decoder.decode(data, max_seconds=limits.max_seconds)
        except SampleTooLongError as exc:
            raise AudioTooLargeError(f"the audio is longer than {limits.max_seconds:.0f} s") from exc
        except VoiceSampleError as exc:
            raise InvalidInputError(
                f"the file is not audio that can be decoded ({exc.message})", code="INVALID_AUDIO"
            ) from exc
        if clip.duration_s > limits.max_seconds:
            raise AudioTooLargeError(f"the audio is longer than {limits.max_seconds:.0f} s")
        return clip

    async def transcribe(
        self,
        clip: DecodedClip,
        options: TranscriptionOptions,
        *,
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> TranscriptOutcome:
        """Transcribe a decoded clip; no speech is an empty transcript with ``NO_SPEECH``."""
        try:
            result = await self._recognizer.transcribe(
                clip.pcm,
                clip.sample_rate,
                language=options.language,
                prompt=options.prompt,
                temperature=options.temperature,
                task=options.task,
                on_segment=on_segment,
            )
        except InvalidInputError as exc:
            if exc.code != NO_SPEECH:
                raise
            empty = Transcription(
                text="",
                is_final=True,
                confidence=0.0,
                language=options.language,
                audio_end_ms=1000 * clip.duration_s,
            )
            return TranscriptOutcome(empty, clip.duration_s, NO_SPEECH)
        return TranscriptOutcome(result, clip.duration_s, None if result.text.strip() else NO_SPEECH)
