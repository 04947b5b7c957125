"""The settings of one Realtime connection (``session.update``), and the ``session`` object that
``session.created`` / ``session.updated`` report (docs/realtime.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avatar.application.realtime.events import (
    REALTIME_SAMPLE_RATE,
    AudioFormatIn,
    SessionConfigIn,
    TranscriptionIn,
    TurnDetectionIn,
)
from avatar.application.realtime.voices import DEFAULT_OPENAI_VOICE


class ConfigError(ValueError):
    """A ``session.update`` value this server cannot honour; ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


_PCM_NAMES = frozenset({"audio/pcm", "pcm16"})


def _check_format(fmt: AudioFormatIn | str | None, param: str) -> None:
    if fmt is None:
        return
    kind = fmt if isinstance(fmt, str) else fmt.type
    rate = None if isinstance(fmt, str) else fmt.rate
    if (kind is not None and kind not in _PCM_NAMES) or (rate is not None and rate != REALTIME_SAMPLE_RATE):
        raise ConfigError(
            f"only PCM16 at {REALTIME_SAMPLE_RATE} Hz is supported (audio/pcm, rate {REALTIME_SAMPLE_RATE})",
            param,
        )


@dataclass
class RealtimeConfig:
    """What the client chose; starts with OpenAI's defaults (server VAD on, transcription off).

    ``server_silence_ms`` is the recognizer's own endpoint (``asr.min_silence_ms``): an utterance
    ends after that much silence. A client asking for a longer ``silence_duration_ms`` gets the
    difference as a wait before the reply starts, during which more speech joins the same turn; a
    shorter one cannot be had and the recognizer's is reported.
    """

    server_silence_ms: int
    silence_duration_ms: int = 0
    instructions: str = ""
    voice: str = DEFAULT_OPENAI_VOICE
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    vad: bool = True
    create_response: bool = True
    interrupt_response: bool = True
    transcription: TranscriptionIn | None = None

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def __post_init__(self) -> None:
        self.silence_duration_ms = max(self.silence_duration_ms, self.server_silence_ms)

    @property
    def reply_delay_ms(self) -> int:
        """How long after the recognizer's endpoint a reply waits for more speech."""
        return self.silence_duration_ms - self.server_silence_ms

    @property
    def auto_reply(self) -> bool:
        """Whether the end of speech starts a reply at once, by itself."""
        return self.vad and self.create_response and self.reply_delay_ms <= 0

    @property
    def delayed_reply(self) -> bool:
        """Whether the end of speech starts a reply by itself after :attr:`reply_delay_ms`."""
        return self.vad and self.create_response and self.reply_delay_ms > 0

    def apply(self, update: SessionConfigIn) -> str | None:
        """Take a ``session.update`` (GA or beta shape); returns the new voice name, if any.

        Raises:
            ConfigError: an audio format other than PCM16 24 kHz, or both modalities at once.
        """
        audio = update.audio
        a_in = audio.input if audio else None
        a_out = audio.output if audio else None
        _check_format(a_in.format if a_in else None, "session.audio.input.format")
        _check_format(a_out.format if a_out else None, "session.audio.output.format")
        _check_format(update.input_audio_format, "session.input_audio_format")
        _check_format(update.output_audio_format, "session.output_audio_format")
        modalities = update.output_modalities or update.modalities
        if modalities is not None:
            chosen = sorted(set(modalities))
            if not chosen:
                raise ConfigError("output_modalities needs text or audio", "session.output_modalities")
            # Beta clients send ["text", "audio"] meaning audio with its transcript.
            self.output_modalities = ["audio"] if "audio" in chosen else ["text"]
        if update.instructions is not None:
            self.instructions = update.instructions
        if a_in is not None and "turn_detection" in a_in.model_fields_set:
            self._turn_detection(a_in.turn_detection)
        elif "turn_detection" in update.model_fields_set:
            self._turn_detection(update.turn_detection)
        if a_in is not None and "transcription" in a_in.model_fields_set:
            self.transcription = a_in.transcription
        elif "input_audio_transcription" in update.model_fields_set:
            self.transcription = update.input_audio_transcription
        voice = a_out.voice if a_out is not None and a_out.voice is not None else update.voice
        if voice is None:
            return None
        return voice if isinstance(voice, str) else voice.id

    def _turn_detection(self, td: TurnDetectionIn | None) -> None:
        self.vad = td is not None
        if td is None:
            return
        if td.create_response is not None:
            self.create_response = td.create_response
        if td.silence_duration_ms is not None:
            self.silence_duration_ms = max(td.silence_duration_ms, self.server_silence_ms)
        if td.interrupt_response is not None:
            self.interrupt_response = td.interrupt_response

    def describe(self, session_id: str, model: str, *, beta: bool) -> dict[str, Any]:
        """The ``session`` object of ``session.created`` / ``session.updated``."""
        fmt = {"type": "audio/pcm", "rate": REALTIME_SAMPLE_RATE}
        turn_detection: dict[str, Any] | None = None
        if self.vad:
            turn_detection = {
                "type": "server_vad",
                "silence_duration_ms": self.silence_duration_ms,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
                "threshold": 0.5,
                "prefix_padding_ms": 300,
            }
        transcription = (
            None if self.transcription is None else self.transcription.model_dump(exclude_none=True)
        )
        if beta:
            return {
                "id": session_id,
                "object": "realtime.session",
                "model": model,
                "modalities": ["text", "audio"] if self.audio_out else ["text"],
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": turn_detection,
                "input_audio_transcription": transcription,
                "tools": [],
                "tool_choice": "auto",
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": transcription,
                    "turn_detection": turn_detection,
                    "noise_reduction": None,
                },
                "output": {"format": fmt, "voice": self.voice, "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
        }
