"""Speech synthesis adapters: the TTS engines in-process (embedded) or the TTS service over HTTP.

Both satisfy :class:`avatar.application.ports.tts.SpeechSynthesizer`, one instance per tier.
Embedded, both tiers share one :class:`avatar_tts.service.TTSService` (one model manager, one
memory budget); remote, they call the fast (8002) and HQ (8003) services.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.tts import SynthesisRequest, SynthesisStream, VoiceInfo, VoiceReference
from avatar.domain.errors import (
    AvatarError,
    CapacityError,
    DependencyError,
    InvalidInputError,
    NotFoundError,
)
from avatar.domain.models import AudioChunk, PhonemeMark, TTSMode
from avatar.settings import Placement, Settings
from avatar_common.audio import float_to_pcm16, pcm16_to_float, pcm16_to_wav
from avatar_common.fairness import FairSlots
from avatar_tts.engine import Reference, Tier
from avatar_tts.errors import (
    EngineUnavailableError,
    MemoryShortError,
    TTSError,
    UnknownModelError,
    UnknownVoiceError,
)
from avatar_tts.service import ServiceConfig, TTSService, Utterance

TierName = Literal["fast", "hq", "both"]


def service_config(settings: Settings, tiers: tuple[Tier, ...] = (Tier.FAST, Tier.HQ)) -> ServiceConfig:
    """Map the ``tts`` settings group (and the model manifest) into the service's config."""
    from avatar.infrastructure.models import check_model_path, model_manifest
    from avatar_common.modelstore import ModelError, ModelIntegrityError

    tts = settings.tts
    manifest = model_manifest(settings)
    for model_dir in (tts.f5_model_dir, tts.cosyvoice_model_dir):
        if model_dir is not None:
            check_model_path(settings, model_dir)

    def path(artifact: str, name: str | None = None) -> Any:
        try:
            return manifest.path(artifact, name)
        except ModelIntegrityError:
            raise  # a modified model file is refused, never skipped
        except ModelError:
            return None

    return ServiceConfig(
        fast_engine=tts.fast_engine,
        hq_engine=tts.hq_engine,
        fallback_engine=tts.fallback_engine,
        hq_enabled=tts.hq_enabled,
        default_voice=tts.default_voice,
        max_input_chars=tts.max_input_chars,
        queue_timeout_s=tts.queue_timeout_s,
        memory_budget_mb=float(tts.memory_budget_mb),
        idle_unload_s=tts.idle_unload_s,
        piper_model=path("piper-en_US-joe-medium", "en_US-joe-medium.onnx"),
        kokoro_model=path("kokoro-82m-int8"),
        kokoro_voices=path("kokoro-voices-ja", "voices_ja.npz"),
        kokoro_vocab=path("kokoro-voices-ja", "vocab.json"),
        f5_model_dir=tts.f5_model_dir,
        cosyvoice_model_dir=tts.cosyvoice_model_dir,
        voice_cache=settings.data_dir / "tts" / "stock_voice_embeddings.json",
        tiers=tiers,
    )


def domain_error(exc: TTSError) -> AvatarError:
    """The domain error a TTS service error stands for (same stable code)."""
    if isinstance(exc, (UnknownVoiceError, UnknownModelError)):
        return NotFoundError(exc.message, code=exc.code)
    if isinstance(exc, MemoryShortError) or exc.code == "BUSY":  # BUSY: no synthesis slot in time
        return CapacityError(exc.message, code=exc.code)
    if isinstance(exc, EngineUnavailableError) or exc.status >= 500:
        return DependencyError(exc.message, code=exc.code)
    return InvalidInputError(exc.message, code=exc.code)


def _reference(ref: VoiceReference | None) -> Reference | None:
    if ref is None:
        return None
    return Reference(pcm16_to_float(ref.pcm), ref.sample_rate, ref.transcript, ref.embedding or None)


class _EmbeddedStream:
    """An in-process utterance as a ``SynthesisStream`` of PCM16 ``AudioChunk``s."""

    def __init__(self, utt: Utterance) -> None:
        self._utt = utt

    @property
    def sample_rate(self) -> int:
        return self._utt.sample_rate

    @property
    def engine(self) -> str:
        return self._utt.engine

    @property
    def voice(self) -> str:
        return self._utt.voice

    @property
    def notice(self) -> str | None:
        return self._utt.notice

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        elapsed = 0
        seq = 0
        try:
            async for item in self._utt.aligned_chunks():
                chunk = AudioChunk(
                    float_to_pcm16(item.audio),
                    self._utt.sample_rate,
                    timestamp_ms=elapsed,
                    sequence=seq,
                    phonemes=tuple(
                        PhonemeMark(p.phoneme, p.start_s * 1000.0, p.end_s * 1000.0) for p in item.phonemes
                    ),
                )
                elapsed += round(chunk.duration_ms)
                seq += 1
                yield chunk
        except TTSError as exc:
            raise domain_error(exc) from exc

    async def aclose(self) -> None:
        await self._utt.aclose()


class EmbeddedSynthesizer:
    """One tier of an in-process :class:`TTSService`."""

    def __init__(self, service: TTSService, tier: Tier) -> None:
        self._service = service
        self._tier = tier

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The engines' Prometheus registry (shared by both tiers), exported by the orchestrator."""
        return self._service.metrics.registry

    @property
    def slots(self) -> FairSlots:
        """The synthesis slots the sessions share, round-robin (also shown in :meth:`health`)."""
        return self._service.slots

    async def synthesize(self, request: SynthesisRequest) -> SynthesisStream:
        tier = Tier.HQ if request.mode is TTSMode.HQ else self._tier
        try:
            utt = await self._service.synthesize(
                request.text,
                tier=tier,
                voice=request.voice,
                language=request.language,
                speed=request.speed,
                reference=_reference(request.reference),
                pitch=request.pitch,
                instructions=request.instructions,
                key=request.session_id,
            )
        except TTSError as exc:
            raise domain_error(exc) from exc
        return _EmbeddedStream(utt)

    async def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(v.voice_id, v.name, v.languages, TTSMode(v.tier.value), v.engine, v.can_clone)
            for v in self._service.voices()
            if v.tier is self._tier
        ]

    async def health(self) -> ComponentHealth:
        try:
            info = await self._service.health()
        except Exception as exc:  # a health check never raises
            return ComponentHealth(f"tts_{self._tier.value}", False, f"{type(exc).__name__}: {exc}")
        return ComponentHealth(
            f"tts_{self._tier.value}", bool(info["ok"]), f"breaker {info['hq_breaker']}", extra=info
        )


class _RemoteStream:
    def __init__(self, response: httpx.Response, stack: contextlib.AsyncExitStack) -> None:
        self._response = response
        self._stack = stack
        headers = response.headers
        self._rate = int(headers.get("x-sample-rate", "22050"))
        self._engine = str(headers.get("x-tts-engine", ""))
        self._voice = str(headers.get("x-tts-voice", ""))
        notice = headers.get("x-tts-notice")
        self._notice = notice.encode("ascii").decode("unicode_escape") if notice else None

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def engine(self) -> str:
        return self._engine

    @property
    def voice(self) -> str:
        return self._voice

    @property
    def notice(self) -> str | None:
        return self._notice

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        carry = b""
        elapsed = 0
        seq = 0
        try:
            async for block in self._response.aiter_bytes():
                data = carry + block
                cut = len(data) - len(data) % 2
                carry = data[cut:]
                if not cut:
                    continue
                chunk = AudioChunk(data[:cut], self._rate, timestamp_ms=elapsed, sequence=seq)
                elapsed += round(chunk.duration_ms)
                seq += 1
                yield chunk
        except httpx.HTTPError as exc:
            raise DependencyError(f"the TTS service stream broke: {exc}") from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._stack.aclose()


class RemoteSynthesizer:
    """HTTP client of a TTS service (``avatar serve tts``) for one tier."""

    def __init__(self, base_url: str, tier: Tier, client: httpx.AsyncClient) -> None:
        self._url = base_url.rstrip("/")
        self._tier = tier
        self._client = client

    async def synthesize(self, request: SynthesisRequest) -> SynthesisStream:
        tier = Tier.HQ if request.mode is TTSMode.HQ else self._tier
        body: dict[str, Any] = {
            "model": "tts-1-hd" if tier is Tier.HQ else "tts-1",
            "input": request.text,
            "voice": request.voice or "default",
            "response_format": "pcm",
            "speed": request.speed,
            "pitch": request.pitch,
            "language": request.language,
        }
        if request.instructions:
            body["instructions"] = request.instructions
        if request.reference is not None:
            ref = request.reference
            body["reference_audio"] = base64.b64encode(pcm16_to_wav(ref.pcm, ref.sample_rate)).decode()
            body["reference_text"] = ref.transcript
            body["reference_embedding"] = list(ref.embedding) if ref.embedding else None
        stack = contextlib.AsyncExitStack()
        try:
            response = await stack.enter_async_context(
                self._client.stream("POST", f"{self._url}/v1/audio/speech", json=body)
            )
            if response.status_code >= 400:
                await response.aread()
                raise _remote_error(response)
        except httpx.HTTPError as exc:
            await stack.aclose()
            raise DependencyError(f"the TTS service at {self._url} is unreachable: {exc}") from exc
        except BaseException:
            await stack.aclose()
            raise
        return _RemoteStream(response, stack)

    async def voices(self) -> list[VoiceInfo]:
        try:
            resp = await self._client.get(f"{self._url}/v1/voices")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise DependencyError(f"the TTS service at {self._url} is unreachable: {exc}") from exc
        return [
            VoiceInfo(
                v["id"],
                v["name"],
                tuple(v["languages"]),
                TTSMode(v["tier"]),
                v["engine"],
                bool(v["can_clone"]),
            )
            for v in resp.json()["voices"]
            if v["tier"] == self._tier.value
        ]

    async def health(self) -> ComponentHealth:
        name = f"tts_{self._tier.value}"
        try:
            resp = await self._client.get(f"{self._url}/health", timeout=5.0)
            return ComponentHealth(name, resp.status_code == 200, f"{self._url}: HTTP {resp.status_code}")
        except httpx.HTTPError as exc:
            return ComponentHealth(name, False, f"{self._url}: {exc}")


def _remote_error(response: httpx.Response) -> AvatarError:
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "TTS_ERROR", response.text[:200]
    if response.status_code in (401, 403):  # a deployment mistake, never the caller's input
        from avatar.infrastructure.secrets import SERVICE_KEY_REFUSED, key_refused_message

        return DependencyError(key_refused_message("TTS"), code=SERVICE_KEY_REFUSED)
    if response.status_code == 404:
        return NotFoundError(message, code=code)
    if response.status_code == 503 and code in ("VRAM_EXHAUSTED", "BUSY"):
        return CapacityError(message, code=code)
    if response.status_code >= 500:
        return DependencyError(message, code=code)
    return InvalidInputError(message, code=code)


async def build_synthesizers(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[EmbeddedSynthesizer | RemoteSynthesizer, EmbeddedSynthesizer | RemoteSynthesizer]:
    """The fast and the HQ synthesizer the settings ask for (started; closed by ``stack``)."""
    if settings.tts.placement is Placement.REMOTE:
        from avatar.infrastructure.secrets import service_headers

        headers = service_headers(settings)
        client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), headers=headers)
        stack.push_async_callback(client.aclose)
        return (
            RemoteSynthesizer(settings.tts.fast_url, Tier.FAST, client),
            RemoteSynthesizer(settings.tts.hq_url, Tier.HQ, client),
        )
    service = TTSService(service_config(settings))
    await service.start()
    stack.push_async_callback(service.aclose)
    return EmbeddedSynthesizer(service, Tier.FAST), EmbeddedSynthesizer(service, Tier.HQ)


def create_service_app(settings: Settings, tier: TierName = "both") -> FastAPI:
    """The TTS service app for ``avatar serve tts --tier ...`` (engines load in its lifespan)."""
    from avatar_tts.app import create_app

    tiers = {"fast": (Tier.FAST,), "hq": (Tier.HQ,), "both": (Tier.FAST, Tier.HQ)}[tier]
    from avatar.infrastructure.secrets import guard_service

    app = create_app(TTSService(service_config(settings, tiers)), title=f"AVATAR TTS ({tier})")
    return guard_service(app, settings)
