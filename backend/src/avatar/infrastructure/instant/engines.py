"""The instant engines (see the package docstring): speech, language and voice with no models."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from avatar.application.ports.asr import TranscriptEvent, TranscriptEventKind, TranscriptionTask
from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatMessage
from avatar.application.ports.prosody import ProsodyResult
from avatar.application.ports.tts import SynthesisRequest, VoiceInfo
from avatar.domain.models import AudioChunk, SegmentTiming, Transcription, TTSMode

NO_SPEECH_MESSAGE = "no speech was heard"

# --- speech recognition ---------------------------------------------------------------------


class InstantRecognitionStream:
    """Endpoints on a fixed rule: after ``utterance_ms`` of audio it emits SPEECH_STARTED, one
    PARTIAL and a FINAL with the recognizer's next scripted text.

    With a ``silence_rms`` threshold, quieter chunks neither start nor extend an utterance (a
    crude VAD), so a client that keeps streaming its silent microphone after speaking does not
    start a new utterance, and barge in on the reply, as it would without one. With
    ``endpoint_silence_ms`` as well, an utterance also ends after that much silence following
    sound (as a real VAD endpoints), whichever comes first.
    """

    def __init__(self, owner: InstantRecognizer, language: str | None) -> None:
        self.owner = owner
        self.language = language
        self._queue: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._audio_ms = 0.0
        self._pcm = bytearray()
        self._started = False
        self._silence_ms = 0.0
        self.closed = False

    def _is_silence(self, chunk: AudioChunk) -> bool:
        threshold = self.owner.silence_rms
        if threshold is None:
            return False
        samples = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32)
        if not samples.size:
            return True
        return float(np.dot(samples, samples)) < threshold * threshold * samples.size  # RMS < threshold

    async def push_audio(self, chunk: AudioChunk) -> None:
        if self._is_silence(chunk):
            endpoint = self.owner.endpoint_silence_ms
            if self._started and endpoint is not None:
                self._silence_ms += chunk.duration_ms
                if self._silence_ms >= endpoint:
                    await self._finish()
            return
        self._silence_ms = 0.0
        self._audio_ms += chunk.duration_ms
        self._pcm += chunk.pcm
        if not self._started:
            self._started = True
            await self._queue.put(
                TranscriptEvent(TranscriptEventKind.SPEECH_STARTED, stream_time_ms=self._audio_ms)
            )
        if self._audio_ms >= self.owner.utterance_ms:
            await self._finish()

    async def _finish(self) -> None:
        text = self.owner.next_text()
        await self._queue.put(
            TranscriptEvent(
                TranscriptEventKind.PARTIAL,
                Transcription(text=text.split(" ")[0], is_final=False, confidence=0.5),
            )
        )
        await self._queue.put(
            TranscriptEvent(
                TranscriptEventKind.FINAL,
                Transcription(text=text, is_final=True, confidence=0.9, language=self.language or "en"),
                utterance_pcm=bytes(self._pcm),
            )
        )
        self._audio_ms = 0.0
        self._silence_ms = 0.0
        self._pcm = bytearray()
        self._started = False

    async def end_input(self) -> None:
        if self._started:
            await self._finish()
        else:  # as the real engine: a push-to-talk release with nothing said
            kind, code = TranscriptEventKind.ERROR, "NO_SPEECH"
            await self._queue.put(TranscriptEvent(kind, error_code=code, message=NO_SPEECH_MESSAGE))

    async def aclose(self) -> None:
        self.closed = True
        await self._queue.put(None)

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event


class InstantRecognizer:
    """Satisfies ``SpeechRecognizer``: the texts are said in turn, one per utterance."""

    def __init__(
        self,
        texts: Sequence[str] = ("hello there",),
        utterance_ms: float = 1000.0,
        silence_rms: float | None = None,
        endpoint_silence_ms: float | None = None,
    ) -> None:
        if endpoint_silence_ms is not None and silence_rms is None:
            raise ValueError("endpoint_silence_ms needs a silence_rms threshold to tell silence from sound")
        self.texts = list(texts)
        self.utterance_ms = utterance_ms
        self.silence_rms = silence_rms
        self.endpoint_silence_ms = endpoint_silence_ms
        self._next = 0

    def next_text(self) -> str:
        text = self.texts[self._next % len(self.texts)]
        self._next += 1
        return text

    async def open_stream(self, *, language: str | None = None) -> InstantRecognitionStream:
        return InstantRecognitionStream(self, language)

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
        return Transcription(text=self.next_text(), is_final=True, confidence=0.9, language=language or "en")

    async def health(self) -> ComponentHealth:
        return ComponentHealth("asr", True, "instant")


# --- chat model and embeddings ------------------------------------------------------------------


class InstantChatModel:
    """Satisfies ``ChatModel``: streams the replies in turn, word by word (after ``token_delay_s``
    each, to stand in for a model's speed)."""

    def __init__(
        self, replies: Sequence[str] = ("[happy] Hello! Nice to meet you.",), token_delay_s: float = 0.0
    ) -> None:
        self.replies = list(replies)
        self.token_delay_s = token_delay_s
        #: Replies abandoned part-way (the listener barged in).
        self.cancelled = 0
        self._next = 0

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        session: uuid.UUID | None = None,
    ) -> AsyncGenerator[str, None]:
        reply = self.replies[self._next % len(self.replies)]
        self._next += 1
        words = reply.split(" ")
        try:
            for i, word in enumerate(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield word if i == 0 else " " + word
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4) if text else 0

    async def health(self) -> ComponentHealth:
        return ComponentHealth("llm", True, "instant")


class InstantTextEmbedder:
    """Satisfies ``TextEmbedder``: a bag-of-words hashing embedder, so texts sharing words are
    close (deterministic; no meaning across languages)."""

    def __init__(self, dim: int = 512) -> None:
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            counts: dict[int, float] = {}
            for word in text.lower().split():
                h = int(hashlib.sha256(word.strip(".,!?").encode()).hexdigest(), 16) % self._dim
                counts[h] = counts.get(h, 0.0) + 1.0
            norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
            vec = [0.0] * self._dim
            for index, count in counts.items():
                vec[index] = count / norm
            out.append(vec)
        return out


# --- speech synthesis -------------------------------------------------------------------------


@dataclass
class InstantSynthesisStream:
    """~60 ms of a 220 Hz tone per character of the text, in ``chunk_ms`` pieces."""

    request: SynthesisRequest
    sample_rate: int = 16000
    engine: str = "instant"
    voice: str = "instant-voice"
    notice: str | None = None
    chunk_ms: int = 100
    delay_s: float = 0.0
    closed: bool = False

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        total = max(1, len(self.request.text)) * 60 * self.sample_rate // 1000
        per = self.chunk_ms * self.sample_rate // 1000
        seq = 0
        for start in range(0, total, per):
            if self.closed:
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            n = min(per, total - start)
            pcm = _tone(start, n, self.sample_rate)
            yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, sequence=seq)
            seq += 1

    async def aclose(self) -> None:
        self.closed = True


@functools.lru_cache(maxsize=256)
def _tone(start: int, n: int, sample_rate: int) -> bytes:
    """Samples ``start .. start + n`` of a 220 Hz tone (PCM16; the same pieces recur, so cached)."""
    t = np.arange(start, start + n, dtype=np.float64) / sample_rate
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


class InstantSynthesizer:
    """Satisfies ``SpeechSynthesizer`` for one tier (each chunk after ``delay_s``)."""

    def __init__(self, mode: TTSMode = TTSMode.FAST, *, delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s

    async def synthesize(self, request: SynthesisRequest) -> InstantSynthesisStream:
        return InstantSynthesisStream(request, delay_s=self.delay_s)

    async def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("instant-voice", "Instant", ("en",), self.mode, "instant")]

    async def health(self) -> ComponentHealth:
        return ComponentHealth(f"tts_{self.mode.value}", True, "instant")


class InstantSpeakerEncoder:
    """Satisfies ``SpeakerEncoder``: a clip's vector is a hash of its bytes (same clip, same vector)."""

    @property
    def dim(self) -> int:
        return 256

    async def embed(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        seed = hashlib.sha256(pcm[:4096] + sample_rate.to_bytes(4, "little")).digest()
        raw = [((seed[i % len(seed)] + i) % 97) / 97.0 - 0.5 for i in range(256)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        return tuple(v / norm for v in raw)


class InstantProsodyAnalyzer:
    """Satisfies ``ProsodyAnalyzer``: fixed scores; clips under 0.5 s are unreliable (too short)."""

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        duration = len(pcm) / 2 / sample_rate
        if duration < 0.5:
            return ProsodyResult(
                50.0, 50.0, 50.0, {"duration_s": duration}, reliable=False, reason="too_short"
            )
        return ProsodyResult(70.0, 60.0, 65.0, {"duration_s": duration, "f0_mean_hz": 180.0})

    async def health(self) -> ComponentHealth:
        return ComponentHealth("prosody", True, "instant")
