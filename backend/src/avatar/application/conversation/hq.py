"""The background HQ pass (:class:`~avatar.application.tasks.HQTask`): the whole reply in the
high-quality voice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from avatar.application.conversation.events import HqReadyMsg, NoticeMsg
from avatar.application.conversation.ports import VoiceResolver
from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.clock import Clock
from avatar.application.ports.notify import ClientNotifier
from avatar.application.ports.queue import TaskHandler
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest, SynthesisStream
from avatar.application.storage_records import StorageApplier, SynthesizedRow
from avatar.application.tasks import HQTask
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import AudioChunk, SynthesizedAudio, TTSMode, new_id
from avatar.domain.storage_keys import synthesized_key
from avatar.domain.wav import pcm16_wav

log = logging.getLogger(__name__)


class HQPass:
    """The queue handler of :data:`~avatar.application.tasks.HQ_TOPIC`: synthesize the reply in the
    HQ voice, store ``synthesized/hq/{turn_id}_hq_{ts}.wav``, record the row, and tell the client
    ``hq_ready`` with a presigned URL (or ``notice`` ``HQ_UNAVAILABLE`` when synthesis fails)."""

    def __init__(
        self,
        *,
        hq_tts: SpeechSynthesizer,
        object_store: ObjectStore,
        uow: UnitOfWorkFactory,
        notifier: ClientNotifier,
        clock: Clock,
        voice_resolver: VoiceResolver | None = None,
        durable: DurableWriter | None = None,
    ) -> None:
        self._tts = hq_tts
        # The audio row waits in the storage spool while the database is unreachable
        # (docs/resilience.md); without a spool it is written straight away.
        self._writes = durable or DurableWriter(StorageApplier(uow, None))
        self._store = object_store
        self._uow = uow
        self._notifier = notifier
        self._clock = clock
        self._resolve = voice_resolver

    async def __call__(self, payload: dict[str, Any]) -> None:
        try:
            task = HQTask.from_payload(payload)
        except InvalidInputError as exc:
            # Redelivering a malformed task cannot help: drop it loudly.
            log.error("dropping HQ task: %s", exc.message)
            return
        if not task.text.strip():
            return
        async with self._uow() as tx:
            if await tx.sessions.get(task.session_id) is None:
                # The session was erased (docs/security.md, "Delete my data"): nothing to store.
                log.info("dropping HQ task of erased session %s", task.session_id)
                return
        started = self._clock.monotonic()
        pcm, rate, stream = await self._synthesize(task)
        if pcm:
            await self._store_and_tell(task, pcm, rate, stream, self._clock.monotonic() - started)

    async def _synthesize(self, task: HQTask) -> tuple[bytes, int, SynthesisStream]:
        """The whole reply's audio; a failure is told to the client and raised (for redelivery)."""
        profile_id = task.voice_profile_id
        reference = await self._resolve(profile_id, task.session_id) if profile_id and self._resolve else None
        request = SynthesisRequest(
            text=task.text.strip(),
            mode=TTSMode.HQ,
            voice=task.voice,
            language=task.language,
            reference=reference,
            emotion=task.emotion,
        )
        try:
            stream = await self._tts.synthesize(request)
            try:
                pcm, rate = await collect(stream.chunks())
            finally:
                await stream.aclose()
        except Exception as exc:
            log.warning("HQ synthesis of turn %s failed: %s", task.turn_id, exc)
            notice = NoticeMsg(
                code="HQ_UNAVAILABLE", message=f"HQ audio is unavailable for now: {exc}", turn_id=task.turn_id
            )
            await self._notifier.notify(task.session_id, notice)
            raise
        return pcm, rate, stream

    async def _store_and_tell(
        self, task: HQTask, pcm: bytes, rate: int, stream: SynthesisStream, elapsed_s: float
    ) -> None:
        key = synthesized_key(task.turn_id, TTSMode.HQ, self._clock.now())
        url = await self._store.put(key, pcm16_wav(pcm, rate), "audio/wav")
        duration_s = len(pcm) / 2 / rate
        row = SynthesizedAudio(
            audio_id=new_id(),
            turn_id=task.turn_id,
            mode=TTSMode.HQ,
            audio_url=url,
            duration_sec=duration_s,
            synthesis_time_ms=elapsed_s * 1000.0,
            voice_profile_id=task.voice_profile_id,
            engine=stream.engine,
            voice=stream.voice,
        )
        try:
            await self._writes.write(SynthesizedRow(row=row))
        except Exception:
            # The turn may have been erased meanwhile: leave no object without a row.
            await self._store.delete(key)
            async with self._uow() as tx:
                erased = await tx.turns.get(task.turn_id) is None
            if erased:
                log.info("dropping HQ audio of erased turn %s", task.turn_id)
                return
            raise
        message = HqReadyMsg(
            turn_id=task.turn_id,
            url=await self._store.presigned_url(key),
            duration_ms=round(duration_s * 1000.0, 1),
            notice=stream.notice or None,
        )
        await self._notifier.notify(task.session_id, message)


def make_hq_handler(
    *,
    hq_tts: SpeechSynthesizer,
    object_store: ObjectStore,
    uow: UnitOfWorkFactory,
    notifier: ClientNotifier,
    clock: Clock,
    voice_resolver: VoiceResolver | None = None,
    durable: DurableWriter | None = None,
) -> TaskHandler:
    """The HQ pass as a queue handler (see :class:`HQPass`)."""
    return HQPass(
        hq_tts=hq_tts,
        object_store=object_store,
        uow=uow,
        notifier=notifier,
        clock=clock,
        voice_resolver=voice_resolver,
        durable=durable,
    )


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
