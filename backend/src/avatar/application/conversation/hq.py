"""The background HQ pass (topic ``tts.hq``): the whole reply in the high-quality voice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from avatar.application.conversation.ports import VoiceResolver
from avatar.application.conversation.session import collect
from avatar.application.ports.clock import Clock
from avatar.application.ports.notify import ClientNotifier
from avatar.application.ports.queue import TaskHandler
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion, SynthesizedAudio, TTSMode, new_id
from avatar.domain.storage_keys import synthesized_key
from avatar.domain.wav import pcm16_wav

log = logging.getLogger(__name__)


def _uuid(payload: Mapping[str, Any], key: str, *, required: bool = True) -> uuid.UUID | None:
    raw = payload.get(key)
    if raw is None and not required:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise InvalidInputError(f"tts.hq task has an invalid {key}: {raw!r}") from exc


def make_hq_handler(
    *,
    hq_tts: SpeechSynthesizer,
    object_store: ObjectStore,
    uow: UnitOfWorkFactory,
    notifier: ClientNotifier,
    clock: Clock,
    voice_resolver: VoiceResolver | None = None,
) -> TaskHandler:
    """A queue handler: synthesize, store ``synthesized/hq/{turn_id}_hq_{ts}.wav``, record the row,
    tell the client ``hq_ready`` with a presigned URL (or ``notice`` ``HQ_UNAVAILABLE`` on failure)."""

    async def handle(payload: dict[str, Any]) -> None:
        session_id = _uuid(payload, "session_id")
        turn_id = _uuid(payload, "turn_id")
        assert session_id is not None and turn_id is not None
        text = str(payload.get("text") or "").strip()
        if not text:
            return
        profile_id = _uuid(payload, "voice_profile_id", required=False)
        reference = await voice_resolver(profile_id) if profile_id and voice_resolver else None
        request = SynthesisRequest(
            text=text,
            mode=TTSMode.HQ,
            voice=payload.get("voice"),
            language=payload.get("language"),
            reference=reference,
            emotion=Emotion.parse(payload.get("emotion")),
        )
        started = clock.monotonic()
        try:
            stream = await hq_tts.synthesize(request)
            try:
                pcm, rate = await collect(stream.chunks())
            finally:
                await stream.aclose()
        except Exception as exc:
            log.warning("HQ synthesis of turn %s failed: %s", turn_id, exc)
            await notifier.notify(
                session_id,
                {
                    "type": "notice",
                    "code": "HQ_UNAVAILABLE",
                    "message": f"HQ audio is unavailable for now: {exc}",
                    "turn_id": str(turn_id),
                },
            )
            raise
        if not pcm:
            return
        elapsed_ms = (clock.monotonic() - started) * 1000.0
        key = synthesized_key(turn_id, TTSMode.HQ, clock.now())
        url = await object_store.put(key, pcm16_wav(pcm, rate), "audio/wav")
        duration_s = len(pcm) / 2 / rate
        async with uow() as tx:
            await tx.synthesized.add(
                SynthesizedAudio(
                    audio_id=new_id(),
                    turn_id=turn_id,
                    mode=TTSMode.HQ,
                    audio_url=url,
                    duration_sec=duration_s,
                    synthesis_time_ms=elapsed_ms,
                    voice_profile_id=profile_id,
                    engine=stream.engine,
                    voice=stream.voice,
                )
            )
            await tx.commit()
        message: dict[str, Any] = {
            "type": "hq_ready",
            "turn_id": str(turn_id),
            "url": await object_store.presigned_url(key),
            "duration_ms": round(duration_s * 1000.0, 1),
        }
        if stream.notice:
            message["notice"] = stream.notice
        await notifier.notify(session_id, message)

    return handle
