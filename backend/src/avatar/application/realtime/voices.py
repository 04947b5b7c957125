"""OpenAI voice names as the Realtime endpoint maps them to AVATAR's stock voices (docs/realtime.md).

One table serves both OpenAI surfaces: ``OPENAI_VOICES`` of the REST speech endpoint
(docs/openai.md, "Voices"). The Realtime endpoint speaks with the fast synthesizer only, so it uses
the mapped voice when the fast tier offers it and otherwise the fast tier's English voice; with
neither, the engine's default voice speaks. A voice profile id or a stock voice id
(``engine:name``) is taken as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from avatar.application.openai_compat.speech import OPENAI_VOICES
from avatar.application.ports.tts import VoiceInfo

#: The embedded placement's fast English voice: the fallback of every OpenAI voice.
FAST_ENGLISH_VOICE = "piper:en_US-joe-medium"

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
    mapped = OPENAI_VOICES.get(wanted.lower())
    if mapped is not None:
        candidates = (mapped, FAST_ENGLISH_VOICE)
        return VoiceChoice(wanted.lower(), next((c for c in candidates if c in offered), None))
    if wanted in offered:
        return VoiceChoice(wanted, wanted)
    try:
        return VoiceChoice(wanted, voice_profile_id=uuid.UUID(wanted))
    except ValueError:
        pass
    known = ", ".join(sorted(OPENAI_VOICES))
    raise UnknownVoiceError(
        f"unknown voice {wanted[:100]!r}: use an OpenAI voice ({known}), a stock voice id "
        "(engine:name) or a voice profile id"
    )
