"""The TTS service: validate, chunk, pick engine and voice, stream audio, degrade HQ to fast.

One :class:`TTSService` holds the engines of both tiers and a :class:`ModelManager`. A request
becomes an :class:`Utterance`: a producer task synthesizes clause after clause (in worker
threads, a bounded number at a time) into a small queue that the caller drains; ``aclose``
cancels it between clauses (barge-in).

"Fast then HQ" (docs/design-notes.md §1, §9): the HQ tier loads its model on demand and
synthesizes the first clause before the stream is handed back, inside a circuit breaker (5
failures open it for 30 s). If the engine fails, the breaker is open, or memory is short, the
utterance is served by the fast tier instead and its ``notice`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from circuitbreaker import CircuitBreaker

from avatar_common.fairness import FairSlots
from avatar_common.text import ClauseChunker, detect_language, has_words, speakable
from avatar_tts.config import ServiceConfig as ServiceConfig
from avatar_tts.engine import (
    MAX_INSTRUCTION_CHARS,
    AlignedAudio,
    Engine,
    FloatAudio,
    InstructableEngine,
    PhonemeSpan,
    Reference,
    Tier,
    Voice,
    audio_of,
    normalize_language,
)
from avatar_tts.errors import (
    BusyError,
    InvalidTextError,
    MemoryShortError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from avatar_tts.lifecycle import MemoryProbe, ModelManager, process_memory_mb
from avatar_tts.metrics import TTSMetrics
from avatar_tts.pitch import MAX_PITCH, MIN_PITCH, shift_pitch
from avatar_tts.voices import SAMPLE_TEXT, Embedder, VoiceMatcher

log = logging.getLogger(__name__)

_MARKUP = re.compile(r"<\s*/?\s*[A-Za-z][\w:.-]*(\s[^<>]*)?/?\s*>|<!--|<\?xml|&[a-z]+;|&#\d+;")
_ALLOWED_CONTROL = frozenset("\n\r\t")


def validate_text(text: str, max_chars: int, *, piece: bool = False) -> str:
    """Check that ``text`` is plain speakable text; returns it stripped.

    A ``piece`` of a text arriving incrementally may be empty or only punctuation.

    Raises:
        InvalidTextError: empty, longer than ``max_chars``, control characters, markup (SSML).
    """
    stripped = text.strip()
    if not stripped and not piece:
        raise InvalidTextError("the text is empty: send at least one word to speak", code="EMPTY_TEXT")
    if len(text) > max_chars:
        raise InvalidTextError(
            f"the text has {len(text)} characters; the limit is {max_chars} (split it into several requests)",
            code="TEXT_TOO_LONG",
        )
    bad = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROL]
    if bad:
        shown = ", ".join(sorted({repr(c) for c in bad}))
        raise InvalidTextError(
            f"the text contains control characters ({shown}); send plain text", code="CONTROL_CHARACTERS"
        )
    if _MARKUP.search(text):
        raise InvalidTextError(
            "SSML and other markup are not supported: send plain text without tags",
            code="MARKUP_NOT_SUPPORTED",
        )
    if not piece and not has_words(speakable(stripped)):
        raise InvalidTextError(
            "the text has nothing to pronounce (no letters or digits)", code="NOTHING_TO_SPEAK"
        )
    return stripped


def build_engines(config: ServiceConfig) -> dict[str, Engine]:
    """Instantiate (not load) the engines the config names; each loads lazily."""
    from avatar_tts.engines.espeak import EspeakEngine

    engines: dict[str, Engine] = {"espeak": EspeakEngine()}
    wanted = {config.fast_engine, config.hq_engine, config.fallback_engine}
    if "piper" in wanted and config.piper_model is not None:
        from avatar_tts.engines.piper import PiperEngine

        engines["piper"] = PiperEngine(config.piper_model)
    if "kokoro" in wanted and config.kokoro_model is not None and config.kokoro_voices is not None:
        from avatar_tts.engines.kokoro import KokoroEngine

        engines["kokoro"] = KokoroEngine(config.kokoro_model, config.kokoro_voices, config.kokoro_vocab)
    if "f5" in wanted and config.f5_model_dir is not None:
        from avatar_tts.engines.f5 import F5Engine

        engines["f5"] = F5Engine(config.f5_model_dir, device=config.device)
    if "cosyvoice" in wanted and config.cosyvoice_model_dir is not None:
        from avatar_tts.engines.cosyvoice import CosyVoiceEngine

        engines["cosyvoice"] = CosyVoiceEngine(config.cosyvoice_model_dir)
    return engines


@dataclass(frozen=True, slots=True)
class Plan:
    engine: Engine
    voice: Voice
    language: str
    tier: Tier
    reference: Reference | None = None
    notice: str | None = None
    #: A reference the engine cannot clone: the nearest stock voice is chosen for it instead.
    match: Reference | None = None
    #: A style instruction, given to engines that follow one (``InstructableEngine``).
    instructions: str | None = None


_END = object()


class _TextSource:
    """Clauses from a whole text or from text pieces arriving over time (validated as they come)."""

    def __init__(self, pieces: AsyncIterator[str] | None, clauses: list[str], max_chars: int) -> None:
        self._pieces = pieces
        self._ready: list[str] = list(clauses)
        self._chunker = ClauseChunker()
        self._max = max_chars
        self._seen = 0
        self._done = pieces is None

    def push_back(self, clause: str) -> None:
        self._ready.insert(0, clause)

    async def next(self) -> str | None:
        while not self._ready:
            if self._done or self._pieces is None:
                return None
            try:
                piece = await anext(self._pieces)
            except StopAsyncIteration:
                self._done = True
                self._ready.extend(self._chunker.flush())
                continue
            self._seen += len(piece)
            if self._seen > self._max:
                raise InvalidTextError(
                    f"the text exceeds the {self._max}-character limit", code="TEXT_TOO_LONG"
                )
            validate_text(piece, self._max, piece=True)
            self._ready.extend(self._chunker.feed(piece))
        clause = self._ready.pop(0)
        validate_text(clause, self._max, piece=True)  # markup split across pieces
        return clause


class Utterance:
    """One utterance being synthesized; satisfies the backend's ``SynthesisStream`` shape
    except that chunks are float32 arrays at :attr:`sample_rate`."""

    def __init__(
        self,
        service: TTSService,
        plan: Plan,
        source: _TextSource,
        lease: contextlib.AsyncExitStack,
        *,
        requested: Tier,
        speed: float,
        started: float,
        first: list[FloatAudio | AlignedAudio] | None = None,
        synth_seconds: float = 0.0,
        pitch: float = 1.0,
        key: Hashable = None,
    ) -> None:
        self._service = service
        self._pitch = pitch
        self._key = key
        self.plan = plan
        self.requested = requested
        self._source = source
        self._lease = lease
        self._speed = speed
        self._started = started
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self._cancel = threading.Event()
        self._closed = False
        self._first = first
        self.synth_seconds = synth_seconds
        self.audio_seconds = 0.0
        self.first_audio_at: float | None = None
        self._task = asyncio.create_task(self._produce(), name="tts-utterance")

    @property
    def sample_rate(self) -> int:
        return self.plan.engine.sample_rate

    @property
    def engine(self) -> str:
        return self.plan.engine.name

    @property
    def voice(self) -> str:
        return self.plan.voice.voice_id

    @property
    def notice(self) -> str | None:
        return self.plan.notice

    @property
    def mode(self) -> Tier:
        """The tier that actually serves this utterance (``fast`` after a degraded HQ request)."""
        return self.plan.tier

    async def _emit(self, item: FloatAudio | AlignedAudio) -> None:
        phonemes = item.phonemes if isinstance(item, AlignedAudio) else ()
        audio = shift_pitch(audio_of(item), self._pitch)
        if audio.size == 0:
            return
        if phonemes and self._pitch != 1.0:  # varispeed moves the phonemes with the audio
            p = self._pitch
            phonemes = tuple(PhonemeSpan(s.phoneme, s.start_s / p, s.end_s / p) for s in phonemes)
        if self.first_audio_at is None:
            self.first_audio_at = time.perf_counter()
            latency = self.first_audio_at - self._started
            self._service.metrics.latency.labels(mode=self.mode.value).observe(latency)
        self.audio_seconds += audio.size / self.sample_rate
        await self._queue.put(AlignedAudio(audio, phonemes))

    async def _produce(self) -> None:
        try:
            for audio in self._first or []:
                await self._emit(audio)
            while (clause := await self._source.next()) is not None:
                text = speakable(clause)
                if not has_words(text):
                    continue
                arrays, seconds = await self._service.run_engine(
                    self.plan, text, self._speed, self._cancel, self._key
                )
                self.synth_seconds += seconds
                for audio in arrays:
                    await self._emit(audio)
            if self.audio_seconds > 0:
                self._service.metrics.rtf.labels(mode=self.mode.value).observe(
                    self.synth_seconds / self.audio_seconds
                )
            await self._queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(exc)
        finally:
            await self._lease.aclose()

    async def chunks(self) -> AsyncIterator[FloatAudio]:
        """Audio as it is synthesized; raises the TTS error that stopped it, if any."""
        async for item in self.aligned_chunks():
            yield item.audio

    async def aligned_chunks(self) -> AsyncIterator[AlignedAudio]:
        """:meth:`chunks` with the engine's phoneme timing, where it gives any."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, AlignedAudio)
            yield item

    async def aclose(self) -> None:
        """Stop now (barge-in): no further clause is started; the model lease is released."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._lease.aclose()
        while not self._queue.empty():  # wake a consumer waiting in chunks()
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def read_all(self) -> FloatAudio:
        parts = [a async for a in self.chunks()]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class TTSService:
    """Both tiers' engines, their model lifetimes, voice choice and the HQ fallback."""

    def __init__(
        self,
        config: ServiceConfig,
        engines: dict[str, Engine] | None = None,
        *,
        embedder: Embedder | None = None,
        probe: MemoryProbe = process_memory_mb,
        metrics: TTSMetrics | None = None,
    ) -> None:
        self.config = config
        self.engines = engines if engines is not None else build_engines(config)
        self.metrics = metrics or TTSMetrics()
        self.manager = ModelManager(
            config.memory_budget_mb, config.idle_unload_s, probe=probe, on_load=self.metrics.observe_load
        )
        self.metrics.watch_models(self.manager)
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failures,
            recovery_timeout=config.breaker_recovery_s,
            expected_exception=_is_engine_failure,
            name="tts-hq",
        )
        self.slots = FairSlots(max(1, config.max_concurrency))
        self._embedder = embedder
        self._matcher: VoiceMatcher | None = None
        for name, engine in self.engines.items():
            resident = engine.tier is Tier.FAST
            self.manager.register(
                name,
                load=engine.load,
                unload=engine.unload,
                resident=resident,
                estimate_mb=engine.estimate_mb,
                mode=engine.tier.value,
            )

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the resident (fast-tier) models, also on an HQ-only instance (they are its fallback);
        HQ models load on first use."""
        await self.manager.start()

    async def aclose(self) -> None:
        await self.manager.aclose()

    # -- voices ----------------------------------------------------------------------------------
    def _tier_engines(self, tier: Tier) -> list[str]:
        names = (
            [self.config.fast_engine, self.config.fallback_engine]
            if tier is Tier.FAST
            else [self.config.hq_engine]
        )
        return [n for n in dict.fromkeys(names) if n in self.engines]

    def voices(self) -> list[Voice]:
        out: list[Voice] = []
        for tier in self.config.tiers:
            for name in self._tier_engines(tier):
                out.extend(self.engines[name].voices())
        return out

    def find_voice(self, voice_id: str) -> Voice:
        voices = [v for e in self.engines.values() for v in e.voices()]
        for v in voices:
            if v.voice_id == voice_id:
                return v
        short = [v for v in voices if v.name == voice_id]
        if len(short) == 1:
            return short[0]
        raise UnknownVoiceError(f"unknown voice {voice_id!r}; GET /v1/voices lists the voices")

    def _default_voice(self, engine: Engine, language: str) -> Voice | None:
        voices = [v for v in engine.voices() if language in v.languages]
        if self.config.default_voice:
            for v in voices:
                if v.voice_id == self.config.default_voice:
                    return v
        voice_for = getattr(engine, "voice_for", None)
        if voice_for is not None:
            chosen: Voice | None = voice_for(language)
            return chosen
        return voices[0] if voices else None

    # -- planning --------------------------------------------------------------------------------
    def plan(
        self,
        tier: Tier,
        *,
        voice: str | None,
        language: str | None,
        text: str,
        reference: Reference | None = None,
    ) -> Plan:
        """Choose engine and voice for a request (no model is loaded here)."""
        lang = normalize_language(language) if language else None
        if voice and voice not in ("default", "auto"):
            chosen = self.find_voice(voice)
            engine = self.engines[chosen.engine]
            if lang is None:
                detected = detect_language(text)
                lang = detected if detected in chosen.languages else chosen.languages[0]
            elif lang not in chosen.languages:
                raise UnsupportedLanguageError(
                    f"voice {chosen.voice_id} speaks {', '.join(chosen.languages)}, not {lang!r}"
                )
            notice = None
            if reference is not None and not engine.can_clone:
                notice = f"voice {chosen.voice_id} was asked for explicitly; the reference clip is not used"
            return Plan(engine, chosen, lang, engine.tier, reference if engine.can_clone else None, notice)
        lang = lang or detect_language(text)
        names = self._tier_engines(tier)
        if reference is not None:
            names = sorted(names, key=lambda n: not self.engines[n].can_clone)  # cloning engines first
        for name in names:
            engine = self.engines[name]
            default = self._default_voice(engine, lang)
            if default is not None:
                if engine.can_clone:
                    return Plan(engine, default, lang, tier, reference)
                return Plan(engine, default, lang, tier, match=reference)
        if tier is Tier.HQ:
            fast = self.plan(Tier.FAST, voice=None, language=lang, text=text, reference=reference)
            why = f"the HQ voice does not speak {lang!r}" if names else "no HQ engine is available"
            return _with_notice(fast, f"{why}; served by the fast tier")
        raise UnsupportedLanguageError(f"no voice speaks language {lang!r}")

    def _match_stock_voice(self, plan: Plan, reference: Reference) -> Plan:
        """Blocking: the engine cannot clone, so take its stock voice nearest to the profile."""
        candidates = [v for v in plan.engine.voices() if plan.language in v.languages]
        prefix = f"{plan.engine.name} cannot clone voices"
        if reference.embedding is None or len(candidates) < 2:
            return _with_notice(plan, f"{prefix}; speaking with stock voice {plan.voice.voice_id}")
        try:
            voice, score = self._voice_matcher().closest(reference.embedding, candidates)
        except Exception as exc:  # matching is a nicety: fall back to the default voice, say so
            log.warning("stock voice matching failed: %s", exc)
            return _with_notice(plan, f"{prefix}; speaking with stock voice {plan.voice.voice_id}")
        return Plan(
            plan.engine,
            voice,
            plan.language,
            plan.tier,
            None,
            _join(
                plan.notice,
                f"{prefix}; speaking with stock voice {voice.voice_id}, "
                f"the closest to the profile (cosine similarity {score:.2f})",
            ),
        )

    def _voice_matcher(self) -> VoiceMatcher:
        if self._matcher is None:
            from avatar_tts.voices import ResemblyzerEmbedder

            embedder = self._embedder or ResemblyzerEmbedder()
            self._matcher = VoiceMatcher(embedder, self._sample_voice, self.config.voice_cache)
        return self._matcher

    def _sample_voice(self, voice: Voice) -> tuple[FloatAudio, int]:
        engine = self.engines[voice.engine]
        lang = voice.languages[0]
        text = SAMPLE_TEXT.get(lang, SAMPLE_TEXT["en"])
        parts = [audio_of(a) for a in engine.synthesize(text, voice, language=lang, speed=1.0)]
        return np.concatenate(parts), engine.sample_rate

    # -- synthesis -------------------------------------------------------------------------------
    async def run_engine(
        self, plan: Plan, text: str, speed: float, cancel: threading.Event, key: Hashable = None
    ) -> tuple[list[FloatAudio | AlignedAudio], float]:
        """Synthesize one clause in a worker thread; returns arrays and seconds spent.

        At most ``max_concurrency`` clauses are synthesized at once; the others wait their turn,
        round-robin between sessions (``key``), for at most ``queue_timeout_s`` and then fail
        :class:`BusyError` (:mod:`avatar_common.fairness`).
        """

        def work() -> tuple[list[FloatAudio | AlignedAudio], float]:
            start = time.perf_counter()
            out: list[FloatAudio | AlignedAudio] = []
            engine = plan.engine
            gen: Iterator[FloatAudio | AlignedAudio]
            if plan.instructions and isinstance(engine, InstructableEngine) and engine.follows_instructions:
                gen = engine.synthesize(
                    text,
                    plan.voice,
                    language=plan.language,
                    speed=speed,
                    reference=plan.reference,
                    instructions=plan.instructions,
                )
            else:
                gen = engine.synthesize(
                    text, plan.voice, language=plan.language, speed=speed, reference=plan.reference
                )
            for audio in gen:
                out.append(audio)
                if cancel.is_set():
                    break
            return out, time.perf_counter() - start

        if not await self.slots.acquire(self.config.queue_timeout_s, key):
            raise BusyError(
                f"the voice was busy with other conversations for {self.config.queue_timeout_s:g} s "
                "and could not speak this reply in time"
            )
        try:
            return await asyncio.to_thread(work)
        finally:
            self.slots.release()

    async def synthesize(
        self,
        text: str | None = None,
        *,
        pieces: AsyncIterator[str] | None = None,
        tier: Tier = Tier.FAST,
        voice: str | None = None,
        language: str | None = None,
        speed: float = 1.0,
        reference: Reference | None = None,
        pitch: float = 1.0,
        instructions: str | None = None,
        key: Hashable = None,
    ) -> Utterance:
        """Start an utterance from a whole ``text`` or from ``pieces`` arriving over time.

        ``key`` names the conversation asking (its clauses wait for the engine fairly with other
        conversations', see :meth:`run_engine`).

        ``pitch`` (0.5..2.0) raises or lowers the voice by varispeed (:mod:`avatar_tts.pitch`):
        the engine runs at ``speed / pitch`` so the duration still follows ``speed``.
        ``instructions`` (a style, "speak cheerfully") goes to engines that follow one (CosyVoice's
        instruct mode); the others ignore it.

        Raises:
            InvalidTextError, UnknownVoiceError, UnsupportedLanguageError: bad request.
            EngineUnavailableError, MemoryShortError: the fast tier itself cannot serve.
        """
        started = time.perf_counter()
        if not 0.25 <= speed <= 4.0:
            raise InvalidTextError(f"speed must be within 0.25..4.0, got {speed}", code="INVALID_SPEED")
        if not MIN_PITCH <= pitch <= MAX_PITCH:
            raise InvalidTextError(
                f"pitch must be within {MIN_PITCH}..{MAX_PITCH}, got {pitch}", code="INVALID_PITCH"
            )
        if pitch != 1.0:
            speed = min(4.0, max(0.25, speed / pitch))
        style = " ".join((instructions or "").split())
        if len(style) > MAX_INSTRUCTION_CHARS:
            raise InvalidTextError(
                f"instructions may have at most {MAX_INSTRUCTION_CHARS} characters",
                code="INVALID_INSTRUCTIONS",
            )
        if tier not in self.config.tiers:
            raise UnknownVoiceError(f"this instance does not serve the {tier.value} tier")
        if text is not None:
            text = validate_text(text, self.config.max_input_chars)
            chunker = ClauseChunker()
            source = _TextSource(None, [*chunker.feed(text), *chunker.flush()], self.config.max_input_chars)
        elif pieces is not None:
            source = _TextSource(pieces, [], self.config.max_input_chars)
        else:
            raise InvalidTextError("the text is empty: send at least one word to speak", code="EMPTY_TEXT")
        first_clause = await source.next()
        if first_clause is None:
            raise InvalidTextError("the text is empty: send at least one word to speak", code="EMPTY_TEXT")
        source.push_back(first_clause)
        if tier is Tier.HQ and not self.config.hq_enabled:
            fast = self.plan(
                Tier.FAST, voice=voice, language=language, text=first_clause, reference=reference
            )
            return await self._start(
                _with_notice(
                    dataclasses.replace(fast, instructions=style or None),
                    "the HQ tier is disabled; served by the fast tier",
                ),
                source,
                speed,
                started,
                requested=tier,
                pitch=pitch,
                key=key,
            )
        plan = self.plan(tier, voice=voice, language=language, text=first_clause, reference=reference)
        plan = dataclasses.replace(plan, instructions=style or None)
        if plan.tier is Tier.HQ:
            return await self._start_hq(
                plan, source, speed, started, text_sample=first_clause, pitch=pitch, key=key
            )
        return await self._start(plan, source, speed, started, requested=tier, pitch=pitch, key=key)

    async def _start(
        self,
        plan: Plan,
        source: _TextSource,
        speed: float,
        started: float,
        *,
        requested: Tier,
        first: list[FloatAudio | AlignedAudio] | None = None,
        synth_seconds: float = 0.0,
        lease: contextlib.AsyncExitStack | None = None,
        pitch: float = 1.0,
        key: Hashable = None,
    ) -> Utterance:
        if lease is None:
            lease = contextlib.AsyncExitStack()
            try:
                await lease.enter_async_context(self.manager.lease(plan.engine.name))
                if plan.match is not None:
                    plan = await asyncio.to_thread(self._match_stock_voice, plan, plan.match)
            except BaseException:
                await lease.aclose()
                raise
        return Utterance(
            self,
            plan,
            source,
            lease,
            requested=requested,
            speed=speed,
            started=started,
            first=first,
            synth_seconds=synth_seconds,
            pitch=pitch,
            key=key,
        )

    async def _start_hq(
        self,
        plan: Plan,
        source: _TextSource,
        speed: float,
        started: float,
        *,
        text_sample: str,
        pitch: float = 1.0,
        key: Hashable = None,
    ) -> Utterance:
        reason: str | None = None
        if self.breaker.opened:
            reason = (
                f"HQ model unavailable for now (failed {self.breaker.failure_count} times in a row); "
                f"served by the fast tier, retrying in {max(0, self.breaker.open_remaining)} s"
            )
        if reason is None:
            lease = contextlib.AsyncExitStack()
            clause: str | None = None
            try:
                with self.breaker:
                    await lease.enter_async_context(self.manager.lease(plan.engine.name))
                    if plan.match is not None:
                        plan = await asyncio.to_thread(self._match_stock_voice, plan, plan.match)
                    # The first clause is synthesized before answering, so that a failing engine is
                    # found out while the fast tier can still take over the whole utterance.
                    clause = await source.next()
                    arrays: list[FloatAudio | AlignedAudio] = []
                    seconds = 0.0
                    if clause is not None:
                        arrays, seconds = await self.run_engine(
                            plan, speakable(clause), speed, threading.Event(), key
                        )
                return await self._start(
                    plan,
                    source,
                    speed,
                    started,
                    requested=Tier.HQ,
                    first=arrays,
                    synth_seconds=seconds,
                    lease=lease,
                    pitch=pitch,
                    key=key,
                )
            except (MemoryShortError, BusyError) as exc:
                await lease.aclose()
                reason = f"busy, switched to fast mode ({exc.message})"
            except (InvalidTextError, UnsupportedLanguageError, asyncio.CancelledError):
                await lease.aclose()
                raise
            except Exception as exc:
                await lease.aclose()
                log.warning("HQ synthesis failed, degrading to fast: %s", exc)
                reason = (
                    f"HQ model unavailable for now ({type(exc).__name__}: {_short(exc)}); "
                    "served by the fast tier"
                )
                if clause is not None:
                    source.push_back(clause)
        fast = self.plan(
            Tier.FAST,
            voice=None,
            language=plan.language,
            text=text_sample,
            reference=plan.reference or plan.match,
        )
        return await self._start(
            _with_notice(fast, reason), source, speed, started, requested=Tier.HQ, pitch=pitch, key=key
        )

    async def health(self) -> dict[str, Any]:
        return {
            "ok": bool(
                self._tier_engines(Tier.FAST)
                if Tier.FAST in self.config.tiers
                else self._tier_engines(Tier.HQ)
            ),
            "tiers": [t.value for t in self.config.tiers],
            "engines": {n: {"tier": e.tier.value, "can_clone": e.can_clone} for n, e in self.engines.items()},
            "models": self.manager.status(),
            "memory_mb": round(self.manager.used_mb(), 1),
            "hq_breaker": self.breaker.state,
            "slots": self.slots.size,
            "slots_in_use": self.slots.in_use,
            "waiting": self.slots.waiting,
        }


def _with_notice(plan: Plan, notice: str | None) -> Plan:
    return dataclasses.replace(plan, notice=_join(plan.notice, notice))


def _join(a: str | None, b: str | None) -> str | None:
    parts = [p for p in (a, b) if p]
    return "; ".join(parts) if parts else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:160]


def _is_engine_failure(_exc_type: type[BaseException], exc: BaseException) -> bool:
    """What counts against the HQ breaker: engine and load failures, not bad input or a full budget."""
    if not isinstance(exc, Exception):  # cancellation (a caller gone) says nothing about the engine
        return False
    return not isinstance(
        exc, (InvalidTextError, UnsupportedLanguageError, UnknownVoiceError, MemoryShortError, BusyError)
    )
