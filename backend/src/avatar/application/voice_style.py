"""Emotion in the voice: per-emotion speed, pitch and style instruction from the persona file,
applied to every synthesis request that carries the reply's emotion (docs/avatar-control.md,
"Emotion in the voice").

```toml
[voice.emotions.excited]
speed = 1.12   # 0.5 .. 2.0, multiplies the request's speed
pitch = 1.08   # 0.8 .. 1.25, frequency factor (the TTS service applies it by varispeed)
instruction = "Speak with excitement."   # for engines that follow one (CosyVoice)
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest, SynthesisStream, VoiceInfo
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion

SPEED_RANGE = (0.5, 2.0)
PITCH_RANGE = (0.8, 1.25)
MAX_INSTRUCTION_CHARS = 200


@dataclass(frozen=True, slots=True)
class VoiceStyle:
    speed: float = 1.0
    pitch: float = 1.0
    #: The style in words, for engines that follow one (CosyVoice's instruct mode).
    instruction: str | None = None


def parse_voice_styles(raw: dict[str, Any], source: str = "persona.toml") -> dict[Emotion, VoiceStyle]:
    """The ``[voice.emotions.*]`` tables of a persona file (none: every emotion sounds the same)."""
    voice = raw.get("voice", {})
    if not isinstance(voice, dict):
        raise InvalidInputError(f"{source}: [voice] must be a table")
    emotions = voice.get("emotions", {})
    if not isinstance(emotions, dict):
        raise InvalidInputError(f"{source}: [voice.emotions] must be a table of tables")
    styles: dict[Emotion, VoiceStyle] = {}
    for name, table in emotions.items():
        where = f"{source}: [voice.emotions.{name}]"
        try:
            emotion = Emotion(name)
        except ValueError:
            valid = ", ".join(e.value for e in Emotion)
            raise InvalidInputError(f"{where}: unknown emotion (valid: {valid})") from None
        if not isinstance(table, dict) or set(table) - {"speed", "pitch", "instruction"}:
            raise InvalidInputError(f"{where}: only speed, pitch and instruction may be set")
        values = {}
        for key, (lo, hi) in (("speed", SPEED_RANGE), ("pitch", PITCH_RANGE)):
            value = table.get(key, 1.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                raise InvalidInputError(f"{where} {key} = {value!r} must be a number within {lo}..{hi}")
            values[key] = float(value)
        instruction = table.get("instruction")
        if instruction is not None and (
            not isinstance(instruction, str)
            or not instruction.strip()
            or len(instruction) > MAX_INSTRUCTION_CHARS
        ):
            raise InvalidInputError(
                f"{where} instruction must be text of 1..{MAX_INSTRUCTION_CHARS} characters"
            )
        styles[emotion] = VoiceStyle(
            values["speed"], values["pitch"], instruction.strip() if instruction is not None else None
        )
    return styles


def load_voice_styles(path: Path) -> dict[Emotion, VoiceStyle]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"persona file {path} cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid TOML: {exc}") from exc
    return parse_voice_styles(raw, str(path))


class StyledSynthesizer:
    """A synthesizer that speaks each request in the style of its emotion."""

    def __init__(self, inner: SpeechSynthesizer, styles: dict[Emotion, VoiceStyle]) -> None:
        self._inner = inner
        self.styles = styles

    def styled(self, request: SynthesisRequest) -> SynthesisRequest:
        style = self.styles.get(request.emotion) if request.emotion is not None else None
        if style is None:
            return request
        speed = min(4.0, max(0.25, request.speed * style.speed))
        pitch = min(2.0, max(0.5, request.pitch * style.pitch))
        # A caller's own instruction (OpenAI's ``instructions``) wins over the emotion's.
        instructions = request.instructions or style.instruction
        return replace(request, speed=speed, pitch=pitch, instructions=instructions)

    async def synthesize(self, request: SynthesisRequest) -> SynthesisStream:
        return await self._inner.synthesize(self.styled(request))

    async def voices(self) -> list[VoiceInfo]:
        return await self._inner.voices()

    async def health(self) -> ComponentHealth:
        return await self._inner.health()
