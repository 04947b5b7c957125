"""The background HQ pass (:class:`~avatar.application.tasks.HQTask`): the whole reply in the
high-quality voice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from avatar.application.conversation.events import HqReadyMsg, NoticeMsg
from avatar.application.conversation.ports import VoiceResolver
from avatar.application.ports.clock import Clock
from avatar.application.ports.notify import ClientNotifier
from avatar.application.ports.queue import TaskHandler
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.application.tasks import HQTask
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import AudioChunk, SynthesizedAudio, TTSMode, new_id
from avatar.domain.storage_keys import synthesized_key
from avatar.domain.wav import pcm16_wav

log = logging.getLogger(__name__)


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
        try:
            task = HQTask.from_payload(payload)
        except InvalidInputError as exc:
            # Redelivering a malformed task cannot help: drop it loudly.
            log.error("dropping HQ task: %s", exc.message)
            return
        text = task.text.strip()
        if not text:
            return
        session_id, turn_id, profile_id = task.session_id, task.turn_id, task.voice_profile_id
        async with uow() as tx:
            if await tx.sessions.get(session_id) is None:
                # The session was erased (docs/security.md, "Delete my data"): nothing to store.
                log.info("dropping HQ task of erased session %s", session_id)
                return
        reference = await voice_resolver(profile_id, session_id) if profile_id and voice_resolver else None
        request = SynthesisRequest(
            text=text, mode=TTSMode.HQ, voice=task.voice, language=task.language, reference=reference
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
                NoticeMsg(
                    code="HQ_UNAVAILABLE", message=f"HQ audio is unavailable for now: {exc}", turn_id=turn_id
                ),
            )
            raise
        if not pcm:
            return
        elapsed_ms = (clock.monotonic() - started) * 1000.0
        key = synthesized_key(turn_id, TTSMode.HQ, clock.now())
        url = await object_store.put(key, pcm16_wav(pcm, rate), "audio/wav")
        duration_s = len(pcm) / 2 / rate
        try:
            await _record(uow, turn_id, profile_id, url, duration_s, elapsed_ms, stream.engine, stream.voice)
        except Exception:
            # The turn may have been erased meanwhile: leave no object without a row.
            await object_store.delete(key)
            async with uow() as tx:
                erased = await tx.turns.get(turn_id) is None
            if erased:
                log.info("dropping HQ audio of erased turn %s", turn_id)
                return
            raise
        message = HqReadyMsg(
            turn_id=turn_id,
            url=await object_store.presigned_url(key),
            duration_ms=round(duration_s * 1000.0, 1),
            notice=stream.notice or None,
        )
        await notifier.notify(session_id, message)

    return handle


async def _record(
    uow: UnitOfWorkFactory,
    turn_id: uuid.UUID,
    profile_id: uuid.UUID | None,
    url: str,
    duration_s: float,
    elapsed_ms: float,
    engine: str,
    voice: str,
) -> None:
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
                engine=engine,
                voice=voice,
            )
        )
        await tx.commit()


async def collect(iterator: AsyncIterator[AudioChunk]) -> tuple[bytes, int]:
    """All of a synthesis stream's audio as one PCM16 buffer and its sample rate."""
    pcm = bytearray()
    rate = 0
    async for chunk in iterator:
        if not rate:
            rate = chunk.sample_rate
        if chunk.sample_rate == rate:
            pcm += chunk.pcm
    return bytes(pcm), rate
