"""Audio encoding port: PCM16 mono in, a file format out, chunk by chunk where the format allows."""

from __future__ import annotations

from typing import Literal, Protocol

#: The formats OpenAI's ``/v1/audio/speech`` offers.
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[SpeechFormat, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class AudioEncoding(Protocol):
    """One file being encoded.

    ``feed`` returns what can be sent now (``pcm`` and ``wav`` at once, ``mp3`` frame by frame;
    ``opus``, ``aac`` and ``flac`` nothing until ``finish``, which returns the rest). Both are
    blocking calls: run them off the event loop when they may take a while (``finish``).
    """

    @property
    def media_type(self) -> str: ...

    def feed(self, pcm: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class AudioEncoder(Protocol):
    def open(self, fmt: SpeechFormat, sample_rate: int) -> AudioEncoding:
        """A new encoding of PCM16 mono audio at ``sample_rate`` into ``fmt``."""
        ...
