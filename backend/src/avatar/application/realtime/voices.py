"""OpenAI voice names as the Realtime endpoint maps them to AVATAR's stock voices (docs/realtime.md).

``REALTIME_OPENAI_VOICES`` lists, for each OpenAI voice, the stock voices that come closest in
character, best first; the first one the fast synthesizer offers is used, and with none of them the
engine's default voice speaks. (The REST speech endpoint keeps its own table; the two may be merged.)
A voice profile id or a stock voice id (``engine:name``) is taken as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from avatar.application.ports.tts import VoiceInfo

#: The embedded placement's fast English voice: the fallback of every OpenAI voice.
_PIPER_EN = "piper:en_US-joe-medium"

REALTIME_OPENAI_VOICES: dict[str, tuple[str, ...]] = {
    "alloy": ("kokoro:af_alloy", _PIPER_EN),
    "ash": ("kokoro:am_adam", _PIPER_EN),
    "ballad": ("kokoro:bm_george", _PIPER_EN),
    "coral": ("kokoro:af_heart", _PIPER_EN),
    "echo": ("kokoro:am_echo", _PIPER_EN),
    "fable": ("kokoro:bm_fable", _PIPER_EN),
    "nova": ("kokoro:af_nova", _PIPER_EN),
    "onyx": ("kokoro:am_onyx", _PIPER_EN),
    "sage": ("kokoro:af_sarah", _PIPER_EN),
    "shimmer": ("kokoro:af_sky", _PIPER_EN),
    "verse": ("kokoro:am_michael", _PIPER_EN),
    "marin": ("kokoro:af_bella", _PIPER_EN),
    "cedar": ("kokoro:am_puck", _PIPER_EN),
}
DEFAULT_OPENAI_VOICE = "alloy"


@dataclass(frozen=True)
class VoiceChoice:
    """What a Realtime ``voice`` becomes: a stock voice (``None``: the engine's default) or a
    voice profile."""

    name: str
    voice: str | None = None
    voice_profile_id: uuid.UUID | None = None


class UnknownVoiceError(ValueError):
    """The name is neither an OpenAI voice, a stock voice nor a voice profile id."""


def choose_voice(name: str, available: Sequence[VoiceInfo]) -> VoiceChoice:
    """The stock voice (or profile) for a Realtime ``voice`` value."""
    wanted = name.strip()
    offered = {v.voice_id for v in available}
    candidates = REALTIME_OPENAI_VOICES.get(wanted.lower())
    if candidates is not None:
        return VoiceChoice(wanted.lower(), next((c for c in candidates if c in offered), None))
    if wanted in offered:
        return VoiceChoice(wanted, wanted)
    try:
        return VoiceChoice(wanted, voice_profile_id=uuid.UUID(wanted))
    except ValueError:
        pass
    known = ", ".join(sorted(REALTIME_OPENAI_VOICES))
    raise UnknownVoiceError(
        f"unknown voice {wanted[:100]!r}: use an OpenAI voice ({known}), a stock voice id "
        "(engine:name) or a voice profile id"
    )
