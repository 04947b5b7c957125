"""Speech for OpenAI's ``/v1/audio/speech``: OpenAI voice names, stock voices and the caller's
voice profiles, resolved to a synthesizer tier and a ``SynthesisRequest`` (docs/openai.md,
"Voices").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.ports.tts import (
    SpeechSynthesizer,
    SynthesisRequest,
    SynthesisStream,
    VoiceInfo,
    VoiceReference,
)
from avatar.domain.errors import AvatarError, InvalidInputError, NotFoundError
from avatar.domain.models import TTSMode, User

log = logging.getLogger(__name__)

#: OpenAI's built-in voice names and the stock voice each one asks for (docs/openai.md has the
#: table). Where that voice is not served (another placement's engines), the fast tier's voice for
#: the text's language speaks instead and the response says so.
OPENAI_VOICES: Mapping[str, str] = {
    "alloy": "piper:en_US-joe-medium",
    "ash": "piper:en_US-joe-medium",
    "ballad": "kokoro:jm_kumo",
    "cedar": "kokoro:jm_kumo",
    "coral": "kokoro:jf_alpha",
    "echo": "piper:en_US-joe-medium",
    "fable": "kokoro:jf_gongitsune",
    "marin": "kokoro:jf_nezumi",
    "nova": "kokoro:jf_alpha",
    "onyx": "kokoro:jm_kumo",
    "sage": "kokoro:jf_nezumi",
    "shimmer": "kokoro:jf_tebukuro",
    "verse": "piper:en_US-joe-medium",
}
#: OpenAI's speech model names (and ours) to the tier they ask for; a named voice's own engine
#: decides the tier when the voice belongs to the other one.
SPEECH_MODELS: Mapping[str, TTSMode] = {
    "tts-1": TTSMode.FAST,
    "gpt-4o-mini-tts": TTSMode.FAST,
    "tts-fast": TTSMode.FAST,
    "tts-1-hd": TTSMode.HQ,
    "tts-hq": TTSMode.HQ,
}
MAX_INSTRUCTIONS = 500

#: Awaits the cloning reference of a stored profile (``NotFoundError`` when it or its sample is gone).
ReferenceOf = Callable[[uuid.UUID], Awaitable[VoiceReference]]


class VoiceNotFoundError(NotFoundError):
    code = "VOICE_NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    code = "MODEL_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class SpeechOrder:
    """What to say and how (OpenAI's fields, validated by :meth:`OpenAISpeech.start`)."""

    text: str
    voice: str
    model: str = "tts-1"
    speed: float = 1.0
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedVoice:
    """Which tier speaks and with what: a stock ``voice_id`` or a profile's ``reference``."""

    mode: TTSMode
    voice_id: str | None = None
    reference: VoiceReference | None = None
    notice: str | None = None


class OpenAISpeech:
    """Starts the synthesis of one ``/v1/audio/speech`` request."""

    def __init__(
        self,
        fast: SpeechSynthesizer,
        hq: SpeechSynthesizer,
        uow: UnitOfWorkFactory,
        reference_of: ReferenceOf,
        *,
        max_chars: int = 4096,
    ) -> None:
        self._tiers = {TTSMode.FAST: fast, TTSMode.HQ: hq}
        self._uow = uow
        self._reference_of = reference_of
        self.max_chars = max_chars

    def validate(self, order: SpeechOrder) -> TTSMode:
        """The tier the model asks for; ``InvalidInputError`` for bad fields, 404 for a model."""
        if not order.text.strip():
            raise InvalidInputError("input must contain some text", code="EMPTY_TEXT")
        if len(order.text) > self.max_chars:
            raise InvalidInputError(
                f"input may have at most {self.max_chars} characters", code="TEXT_TOO_LONG"
            )
        if not 0.25 <= order.speed <= 4.0:
            raise InvalidInputError("speed must be within 0.25..4.0", code="INVALID_SPEED")
        if order.instructions is not None and len(order.instructions) > MAX_INSTRUCTIONS:
            raise InvalidInputError(
                f"instructions may have at most {MAX_INSTRUCTIONS} characters", code="INVALID_INSTRUCTIONS"
            )
        mode = SPEECH_MODELS.get(order.model.strip().lower())
        if mode is None:
            raise ModelNotFoundError(
                f"the speech model {order.model!r} does not exist; use {', '.join(SPEECH_MODELS)}"
            )
        return mode

    async def resolve(self, voice: str, mode: TTSMode, caller: User) -> ResolvedVoice:
        """An OpenAI voice name, a stock voice (``piper:en_US-joe-medium`` or its name) or the id
        of a voice profile the caller owns; anything else is ``VOICE_NOT_FOUND`` (404)."""
        name = voice.strip()
        if not name:
            raise InvalidInputError("voice must be given", code="INVALID_VOICE")
        served = {m: await self._served(m) for m in self._tiers}
        wanted = OPENAI_VOICES.get(name.lower())
        if wanted is not None:
            for tier_mode, voices in served.items():
                if any(v.voice_id == wanted for v in voices):
                    return ResolvedVoice(tier_mode, wanted)
            return ResolvedVoice(
                TTSMode.FAST, None, notice=f"{wanted} is not served here; the fast tier's voice speaks"
            )
        profile_id = _as_uuid(name)
        if profile_id is not None:
            async with self._uow() as tx:
                profile = await tx.voice_profiles.get(profile_id)
            # Somebody else's profile answers like a missing one (docs/security.md).
            if profile is None or profile.user_id != caller.user_id:
                raise VoiceNotFoundError(f"voice {name!r} not found")
            try:
                reference = await self._reference_of(profile_id)
            except NotFoundError as exc:
                raise VoiceNotFoundError(f"voice {name!r} has no stored sample any more") from exc
            return ResolvedVoice(mode, None, reference)
        for tier_mode in (mode, *(m for m in served if m is not mode)):
            for info in served[tier_mode]:
                if name in (info.voice_id, info.name):
                    return ResolvedVoice(tier_mode, info.voice_id)
        raise VoiceNotFoundError(
            f"voice {name!r} not found; use an OpenAI voice ({', '.join(OPENAI_VOICES)}), a stock voice "
            "or the id of one of your voice profiles"
        )

    async def _served(self, mode: TTSMode) -> list[VoiceInfo]:
        """The tier's voices; a tier that cannot answer (its service is down) serves none, so the
        other tier still speaks."""
        try:
            return await self._tiers[mode].voices()
        except AvatarError as exc:
            log.warning("the %s tier's voices are unknown: %s", mode.value, exc.message)
            return []

    async def stock_voices(self) -> list[tuple[VoiceInfo, list[str]]]:
        """Every stock voice served, each with the OpenAI names that map to it."""
        out = []
        for mode in self._tiers:
            for info in await self._served(mode):
                names = sorted(n for n, v in OPENAI_VOICES.items() if v == info.voice_id)
                out.append((info, names))
        return out

    async def start(self, order: SpeechOrder, caller: User) -> tuple[SynthesisStream, ResolvedVoice]:
        """Validate, resolve the voice and start synthesis (audio then flows from the stream)."""
        mode = self.validate(order)
        resolved = await self.resolve(order.voice, mode, caller)
        request = SynthesisRequest(
            text=order.text,
            mode=resolved.mode,
            voice=resolved.voice_id,
            speed=order.speed,
            reference=resolved.reference,
            instructions=(order.instructions or "").strip() or None,
        )
        stream = await self._tiers[resolved.mode].synthesize(request)
        return stream, resolved


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
