"""The audio encoder (``AudioEncoder`` port): PCM16 mono to ``pcm``, ``wav``, ``mp3``, ``opus``,
``aac`` or ``flac`` with PyAV/libsndfile, the same encoders the TTS service streams with."""

from __future__ import annotations

from avatar.application.ports.audio import AudioEncoding, SpeechFormat
from avatar_common.audio import encode_audio, pcm16_to_float
from avatar_tts.app import Mp3StreamEncoder, streaming_wav_header

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class _Raw:
    """``pcm`` (raw s16le) or ``wav`` with a header saying "length unknown": sent as it comes."""

    def __init__(self, fmt: SpeechFormat, sample_rate: int) -> None:
        self.media_type = MEDIA_TYPES[fmt]
        self._header = streaming_wav_header(sample_rate) if fmt == "wav" else b""

    def feed(self, pcm: bytes) -> bytes:
        head, self._header = self._header, b""
        return head + pcm

    def finish(self) -> bytes:
        head, self._header = self._header, b""
        return head


class _Mp3:
    """One MP3 encoder for the whole utterance, its frames sent as they are made."""

    media_type = MEDIA_TYPES["mp3"]

    def __init__(self, sample_rate: int) -> None:
        self._encoder = Mp3StreamEncoder(sample_rate)

    def feed(self, pcm: bytes) -> bytes:
        return self._encoder.encode(pcm16_to_float(pcm))

    def finish(self) -> bytes:
        return self._encoder.finish()


class _Whole:
    """Containers written once the audio is complete (Ogg/Opus, ADTS/AAC, FLAC)."""

    def __init__(self, fmt: SpeechFormat, sample_rate: int) -> None:
        self.media_type = MEDIA_TYPES[fmt]
        self._fmt = fmt
        self._rate = sample_rate
        self._parts: list[bytes] = []

    def feed(self, pcm: bytes) -> bytes:
        self._parts.append(pcm)
        return b""

    def finish(self) -> bytes:
        return encode_audio(pcm16_to_float(b"".join(self._parts)), self._rate, self._fmt)


class PyAVAudioEncoder:
    """Satisfies ``AudioEncoder``."""

    def open(self, fmt: SpeechFormat, sample_rate: int) -> AudioEncoding:
        if fmt in ("pcm", "wav"):
            return _Raw(fmt, sample_rate)
        if fmt == "mp3":
            return _Mp3(sample_rate)
        if fmt in ("opus", "aac", "flac"):
            return _Whole(fmt, sample_rate)
        raise ValueError(f"unsupported audio format {fmt!r}")
