"""Speech recognition adapters: the ASR engine in-process (embedded) or the ASR service (remote).

Both satisfy :class:`avatar.application.ports.asr.SpeechRecognizer`. The embedded adapter drives
:mod:`avatar_asr` directly (one loaded model shared by every session); the remote one speaks the
service's WebSocket stream protocol and its OpenAI-compatible transcription endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from avatar.application.ports.asr import TranscriptEvent, TranscriptEventKind, TranscriptionTask
from avatar.application.ports.common import ComponentHealth
from avatar.domain.errors import (
    AvatarError,
    CapacityError,
    DependencyError,
    InvalidInputError,
)
from avatar.domain.models import AudioChunk, SegmentTiming, Transcription, WordTiming
from avatar.settings import Placement, Settings
from avatar_common.audio import last_speech_ms

if TYPE_CHECKING:
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry

    from avatar.application.ports.asr import RecognitionStream, SpeechRecognizer
    from avatar_asr.config import ASRConfig
    from avatar_asr.engine import Recognition, Segment
    from avatar_asr.errors import ASRError
    from avatar_asr.metrics import ASRMetrics
    from avatar_asr.service import ASRService
    from avatar_asr.stream import RecognitionSession, StreamEvent

log = logging.getLogger(__name__)

_SIZE_NAMES = frozenset(
    {
        "tiny",
        "tiny.en",
        "base",
        "base.en",
        "small",
        "small.en",
        "medium",
        "medium.en",
        "large-v1",
        "large-v2",
        "large-v3",
        "large",
        "distil-large-v2",
        "distil-large-v3",
        "large-v3-turbo",
        "turbo",
    }
)


def service_config(settings: Settings) -> ASRConfig:
    """Map ``Settings.asr`` onto the service's configuration, resolving packaged model files."""
    from avatar.infrastructure.models import check_model_path, model_manifest
    from avatar_asr.config import ASRConfig

    cfg = settings.asr
    manifest = model_manifest(settings)
    names = {a.name for a in manifest.artifacts}
    if cfg.model in names:
        model = str(manifest.artifact_dir(cfg.model))  # checked against the manifest (docs/security.md)
    elif Path(cfg.model).is_dir():
        check_model_path(settings, Path(cfg.model))  # checked if a production manifest lists it
        model = cfg.model
    elif cfg.model in _SIZE_NAMES:
        model = cfg.model  # a size name faster-whisper resolves (production)
    else:
        raise InvalidInputError(
            f"AVATAR_ASR__MODEL={cfg.model!r} is neither a manifest artifact, a Whisper size name nor a "
            "directory holding a CTranslate2 model"
        )
    return ASRConfig(
        model=model,
        model_name=Path(cfg.model).name,
        vad_model=manifest.path("silero-vad"),
        device=cfg.device,
        compute_type=cfg.compute_type,
        cpu_threads=cfg.cpu_threads,
        language=cfg.language,
        beam_size=cfg.beam_size,
        vad_threshold=cfg.vad_threshold,
        min_silence_ms=cfg.min_silence_ms,
        min_speech_ms=cfg.min_speech_ms,
        max_utterance_s=cfg.max_utterance_s,
        partial_interval_ms=cfg.partial_interval_ms,
        max_queue=cfg.max_queue,
        queue_timeout_s=cfg.queue_timeout_s,
        low_confidence_threshold=cfg.low_confidence_threshold,
        window_pad_s=cfg.window_pad_s,
        speculative_silence_ms=cfg.speculative_silence_ms,
        complete_silence_ms=cfg.complete_silence_ms,
        speculative_quiet_ms=cfg.speculative_quiet_ms,
        max_streams=max(settings.live_session_limit() * 2, 4),
    )


def _to_avatar_error(code: str, message: str, status: int) -> AvatarError:
    if status in (401, 403):  # a deployment mistake, never the caller's input
        from avatar.infrastructure.secrets import SERVICE_KEY_REFUSED, key_refused_message

        return DependencyError(key_refused_message("ASR"), code=SERVICE_KEY_REFUSED)
    if code == "BUSY":
        return CapacityError(message)
    if status >= 500:
        return DependencyError(message, code=code)
    return InvalidInputError(message, code=code)


def _from_asr_error(exc: ASRError) -> AvatarError:
    return _to_avatar_error(exc.code, exc.message, exc.status)


def _transcription(
    rec: Recognition, *, is_final: bool, latency_ms: float, start_ms: float, end_ms: float
) -> Transcription:
    return Transcription(
        text=rec.text,
        is_final=is_final,
        confidence=rec.confidence,
        language=rec.language,
        latency_ms=latency_ms,
        low_confidence=rec.low_confidence,
        words=tuple(WordTiming(w.word, w.start, w.end, w.probability) for w in rec.words),
        segments=tuple(SegmentTiming(s.text, s.start, s.end) for s in rec.segments),
        audio_start_ms=start_ms,
        audio_end_ms=end_ms,
    )


def with_speech_end(transcription: Transcription, utterance_pcm: bytes) -> Transcription:
    """A final with ``speech_end_ms``: the stream time of its audio's last loud sample, so the
    endpoint stage is timed from where the person stopped (docs/adr/0014-voice-latency.md)."""
    if not transcription.is_final or not utterance_pcm:
        return transcription
    heard = last_speech_ms(utterance_pcm, 16000)
    if heard <= 0:
        return transcription
    end = min(transcription.audio_end_ms, transcription.audio_start_ms + heard)
    return dataclasses.replace(transcription, speech_end_ms=end)


# --- embedded ----------------------------------------------------------------------------------


class EmbeddedRecognitionStream:
    """A :class:`RecognitionStream` over an in-process :class:`avatar_asr.stream.RecognitionSession`."""

    def __init__(self, session: RecognitionSession) -> None:
        self._session = session

    async def push_audio(self, chunk: AudioChunk) -> None:
        await self._session.push_pcm(chunk.pcm, chunk.sample_rate)

    async def end_input(self) -> None:
        await self._session.flush()

    async def aclose(self) -> None:
        await self._session.aclose()

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        from avatar_asr.stream import EventKind

        async for event in self._session.events():
            if event.kind is EventKind.END:
                return
            yield self._convert(event)

    @staticmethod
    def _convert(event: StreamEvent) -> TranscriptEvent:
        from avatar_asr.stream import EventKind
        from avatar_common.audio import float_to_pcm16

        if event.kind is EventKind.ERROR:
            return TranscriptEvent(
                TranscriptEventKind.ERROR,
                error_code=event.code,
                message=event.message,
                stream_time_ms=event.stream_time_ms,
            )
        if event.kind is EventKind.SPEECH_STARTED:
            return TranscriptEvent(TranscriptEventKind.SPEECH_STARTED, stream_time_ms=event.stream_time_ms)
        assert event.recognition is not None
        final = event.kind is EventKind.FINAL
        transcription = _transcription(
            event.recognition,
            is_final=final,
            latency_ms=event.latency_ms,
            start_ms=event.audio_start_ms,
            end_ms=event.audio_end_ms,
        )
        pcm = float_to_pcm16(event.utterance) if final and event.utterance is not None else b""
        return TranscriptEvent(
            TranscriptEventKind.FINAL if final else TranscriptEventKind.PARTIAL,
            transcription=with_speech_end(transcription, pcm),
            stream_time_ms=event.stream_time_ms,
            utterance_pcm=pcm,
        )


class EmbeddedSpeechRecognizer:
    """The ASR engine inside the orchestrator process (the embedded default)."""

    def __init__(self, service: ASRService, metrics: ASRMetrics | None = None) -> None:
        self._service = service
        self._metrics = metrics

    @property
    def metrics_registry(self) -> CollectorRegistry | None:
        """The engine's Prometheus registry, exported by the orchestrator's ``/api/v1/metrics``."""
        if self._metrics is None:
            return None
        self._metrics.active_streams.set(self._service.active_streams)
        self._metrics.queue_pending.set(self._service.engine.queue.pending)
        return self._metrics.registry

    async def open_stream(self, *, language: str | None = None) -> RecognitionStream:
        from avatar_asr.errors import ASRError

        try:
            return EmbeddedRecognitionStream(self._service.open_stream(language=language))
        except ASRError as exc:
            raise _from_asr_error(exc) from exc

    async def transcribe(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: TranscriptionTask = "transcribe",
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> Transcription:
        from avatar_asr.errors import ASRError

        report = None
        if on_segment is not None:
            loop = asyncio.get_running_loop()
            callback = on_segment

            def report(segment: Segment) -> None:  # on the decoding thread
                loop.call_soon_threadsafe(callback, SegmentTiming(segment.text, segment.start, segment.end))

        try:
            result = await self._service.transcribe_pcm(
                pcm,
                sample_rate,
                language=language,
                prompt=prompt,
                temperature=temperature,
                task=task,
                on_segment=report,
            )
        except ASRError as exc:
            raise _from_asr_error(exc) from exc
        rec = result.recognition
        return _transcription(
            rec, is_final=True, latency_ms=1000 * rec.decode_s, start_ms=0.0, end_ms=1000 * result.duration
        )

    async def health(self) -> ComponentHealth:
        svc = self._service
        return ComponentHealth(
            name="asr",
            ok=svc.engine.loaded,
            detail=f"{svc.config.model_name} ({svc.config.device}/{svc.config.compute_type}, embedded)",
            extra={
                "active_streams": svc.active_streams,
                "queue_pending": svc.engine.queue.pending,
                "finals_waiting": svc.engine.queue.waiting(),
                "finals_busy": svc.engine.queue.timed_out,
                "partials_shed": svc.engine.queue.partials_shed,
            },
        )


# --- remote ------------------------------------------------------------------------------------


class RemoteRecognitionStream:
    """A :class:`RecognitionStream` over the service's ``/v1/stream`` WebSocket."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._events: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._rate: int | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._closed = False

    @classmethod
    async def connect(
        cls, base_url: str, language: str | None, open_timeout_s: float, headers: dict[str, str] | None = None
    ) -> RemoteRecognitionStream:
        import websockets

        query = {"return_audio": "1", "sample_rate": "16000", **({"language": language} if language else {})}
        url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
        try:
            ws = await websockets.connect(
                f"{url}/v1/stream?{urlencode(query)}",
                max_size=None,
                open_timeout=open_timeout_s,
                additional_headers=headers or {},
            )
        except websockets.InvalidStatus as exc:
            raise _to_avatar_error("ASR_FAILED", str(exc), exc.response.status_code) from exc
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            raise DependencyError(f"the ASR service at {base_url} is unreachable: {exc}") from exc
        first = json.loads(await asyncio.wait_for(ws.recv(), open_timeout_s))
        if first.get("type") != "ready":
            await ws.close()
            raise _to_avatar_error(
                str(first.get("code", "ASR_FAILED")), str(first.get("message", first)), 503
            )
        stream = cls(ws)
        stream._rate = 16000
        return stream

    async def push_audio(self, chunk: AudioChunk) -> None:
        if self._closed:
            return
        try:
            if chunk.sample_rate != self._rate:
                await self._ws.send(json.dumps({"type": "config", "sample_rate": chunk.sample_rate}))
                self._rate = chunk.sample_rate
            await self._ws.send(chunk.pcm)
        except Exception as exc:  # the reader reports the lost connection as an ERROR event
            log.warning("ASR stream send failed: %s", exc)

    async def end_input(self) -> None:
        if not self._closed:
            with contextlib.suppress(Exception):
                await self._ws.send(json.dumps({"type": "flush"}))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                event = self._convert(json.loads(raw))
                if event is not None:
                    self._events.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closed:
                self._events.put_nowait(
                    TranscriptEvent(
                        TranscriptEventKind.ERROR,
                        error_code="ASR_FAILED",
                        message=f"connection to the ASR service lost: {exc}",
                    )
                )
        self._events.put_nowait(None)

    @staticmethod
    def _convert(msg: dict[str, Any]) -> TranscriptEvent | None:
        kind = msg.get("type")
        t = float(msg.get("stream_time_ms", 0.0))
        if kind == "speech_started":
            return TranscriptEvent(TranscriptEventKind.SPEECH_STARTED, stream_time_ms=t)
        if kind == "error":
            return TranscriptEvent(
                TranscriptEventKind.ERROR,
                error_code=str(msg.get("code", "ASR_FAILED")),
                message=str(msg.get("message", "")),
                stream_time_ms=t,
            )
        if kind not in ("partial", "final"):
            return None
        final = kind == "final"
        transcription = Transcription(
            text=str(msg.get("text", "")),
            is_final=final,
            confidence=min(1.0, max(0.0, float(msg.get("confidence", 0.0)))),
            language=msg.get("language"),
            latency_ms=float(msg.get("latency_ms", 0.0)),
            low_confidence=bool(msg.get("low_confidence", False)),
            words=tuple(
                WordTiming(w["word"], w["start"], w["end"], w["probability"]) for w in msg.get("words", [])
            ),
            segments=tuple(SegmentTiming(s["text"], s["start"], s["end"]) for s in msg.get("segments", [])),
            audio_start_ms=float(msg.get("audio_start_ms", 0.0)),
            audio_end_ms=float(msg.get("audio_end_ms", 0.0)),
        )
        pcm = base64.b64decode(msg["audio"]) if final and msg.get("audio") else b""
        return TranscriptEvent(
            TranscriptEventKind.FINAL if final else TranscriptEventKind.PARTIAL,
            transcription=with_speech_end(transcription, pcm),
            stream_time_ms=t,
            utterance_pcm=pcm,
        )


class RemoteSpeechRecognizer:
    """The ASR service over the network (the compose placement)."""

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._url = base_url.rstrip("/")
        self._http = client
        self._timeout = timeout
        #: Sent on the stream's upgrade too (the service key, docs/security.md).
        self._headers = headers or {}

    async def open_stream(self, *, language: str | None = None) -> RecognitionStream:
        return await RemoteRecognitionStream.connect(self._url, language, self._timeout, self._headers)

    async def transcribe(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: TranscriptionTask = "transcribe",
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> Transcription:
        from avatar_common.audio import pcm16_to_wav

        if not pcm:
            raise InvalidInputError("the audio is empty", code="EMPTY_AUDIO")
        if len(pcm) % 2:
            raise InvalidInputError("PCM16 audio must be whole 16-bit samples", code="INVALID_AUDIO")
        data: dict[str, str] = {
            "model": "whisper",
            "response_format": "verbose_json",
            "temperature": repr(float(temperature)),
        }
        if language:
            data["language"] = language
        if prompt:
            data["prompt"] = prompt
        try:
            response = await self._http.post(
                f"{self._url}/v1/audio/{'translations' if task == 'translate' else 'transcriptions'}",
                data=data,
                files={"file": ("audio.wav", pcm16_to_wav(pcm, sample_rate), "audio/wav")},
            )
        except httpx.HTTPError as exc:
            raise DependencyError(f"the ASR service at {self._url} is unreachable: {exc}") from exc
        if response.status_code != 200:
            try:
                err = response.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "ASR_FAILED", response.text[:300]
            raise _to_avatar_error(code, message, response.status_code)
        if response.headers.get("x-avatar-notice") == "NO_SPEECH":
            # The service answers silence with an empty 200 (as OpenAI clients expect); the port's
            # callers are told as before.
            raise InvalidInputError("no speech was detected in the audio", code="NO_SPEECH")
        body = response.json()
        segments = tuple(SegmentTiming(s["text"], s["start"], s["end"]) for s in body.get("segments", []))
        if on_segment is not None:  # the service answers whole: every segment at the end
            for segment in segments:
                on_segment(segment)
        return Transcription(
            text=str(body["text"]),
            is_final=True,
            confidence=min(1.0, max(0.0, float(body.get("confidence", 0.0)))),
            language=body.get("language") or None,
            latency_ms=response.elapsed.total_seconds() * 1000,
            low_confidence=bool(body.get("low_confidence", False)),
            words=tuple(WordTiming(w["word"], w["start"], w["end"], 1.0) for w in body.get("words", [])),
            segments=segments,
            audio_start_ms=0.0,
            audio_end_ms=1000 * float(body.get("duration", 0.0)),
        )

    async def health(self) -> ComponentHealth:
        try:
            response = await self._http.get(f"{self._url}/health", timeout=5.0)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return ComponentHealth(name="asr", ok=False, detail=f"{self._url}: {exc}")
        return ComponentHealth(
            name="asr",
            ok=response.status_code == 200 and body.get("status") == "ok",
            detail=f"{body.get('model')} at {self._url} (remote)",
            extra=dict(body),
        )


# --- composition ---------------------------------------------------------------------------------


async def build_recognizer(settings: Settings, stack: contextlib.AsyncExitStack) -> SpeechRecognizer:
    """The recognizer the settings ask for; the embedded one loads its model here (off the loop)."""
    if settings.asr.placement is Placement.REMOTE:
        from avatar.infrastructure.secrets import service_headers

        headers = service_headers(settings)
        client = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0), headers=headers)
        stack.push_async_callback(client.aclose)
        return RemoteSpeechRecognizer(settings.asr.url, client, headers=headers)
    from avatar_asr.errors import ASRError
    from avatar_asr.metrics import ASRMetrics
    from avatar_asr.service import ASRService

    metrics = ASRMetrics()
    service = ASRService(service_config(settings), observer=metrics)
    stack.callback(service.close)
    try:
        await service.start(warm_up=True)
    except ASRError as exc:
        raise _from_asr_error(exc) from exc
    return EmbeddedSpeechRecognizer(service, metrics)


def create_service_app(settings: Settings) -> FastAPI:
    """The ASR service app (``avatar serve asr``, port 8004) configured from ``Settings.asr``."""
    from avatar.infrastructure.secrets import guard_service
    from avatar_asr.app import create_app

    return guard_service(create_app(service_config(settings)), settings)
