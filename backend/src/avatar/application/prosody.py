"""Prosody use cases: analyze each final utterance off the response path, and report per session.

:class:`ProsodyAnalysisHandler` is the task-queue handler for
:class:`~avatar.application.tasks.ProsodyTask`. For one task it loads the utterance audio from the
object store, builds the speaker's baseline from the session's earlier reliable scores, analyzes,
stores one :class:`ProsodyScore` and pushes ``prosody_analysis`` to the client. Every
transcription gets exactly one stored result: audio that is missing or unreadable is stored as
unreliable with its reason, while an unavailable analyzer or database raises so that the
queue delivers the task again.
"""

from __future__ import annotations

import io
import logging
import math
import uuid
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from avatar.application.conversation.events import ProsodyAnalysisMsg, ProsodyScores
from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.clock import Clock
from avatar.application.ports.notify import ClientNotifier
from avatar.application.ports.prosody import ProsodyAnalyzer, ProsodyResult
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.storage_records import ProsodyInsert, StorageApplier
from avatar.application.tasks import ProsodyTask
from avatar.domain.errors import InvalidInputError, NotFoundError
from avatar.domain.models import ProsodyScore, new_id

log = logging.getLogger(__name__)

#: Earlier reliable utterances needed before scores become relative to the speaker's own baseline.
MIN_BASELINE_UTTERANCES = 2
#: The baseline is the mean over at most this many most recent reliable utterances.
BASELINE_WINDOW = 20
SCORE_NAMES = ("confidence", "stability", "affability")
#: Feature keys with this prefix (the 88 eGeMAPS functionals) are kept but not averaged.
_RAW_ONLY_PREFIX = "egemaps."
#: A trend steeper than this many points per utterance is "rising" or "falling".
TREND_THRESHOLD = 1.0


def decode_pcm16(data: bytes, sample_rate: int) -> tuple[bytes, int]:
    """PCM16 mono and its rate from a WAV file (16-bit mono) or raw PCM16 at ``sample_rate``.

    Raises:
        InvalidInputError: for a WAV that is not 16-bit PCM or not mono, or an odd byte count.
    """
    if data[:4] == b"RIFF":
        try:
            with wave.open(io.BytesIO(data)) as wav:
                if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                    raise InvalidInputError("stored utterance audio must be 16-bit mono WAV")
                return wav.readframes(wav.getnframes()), wav.getframerate()
        except (wave.Error, EOFError) as exc:
            raise InvalidInputError(f"stored utterance audio is not a readable WAV: {exc}") from exc
    if len(data) % 2:
        raise InvalidInputError("raw PCM16 audio must have an even number of bytes")
    return data, sample_rate


def speaker_baseline(earlier: Sequence[ProsodyScore]) -> dict[str, float] | None:
    """Mean of each numeric feature over the latest reliable earlier utterances, or ``None``.

    ``None`` until :data:`MIN_BASELINE_UTTERANCES` reliable utterances exist, so a session's first
    turns are scored against population references.
    """
    reliable = [s for s in earlier if s.reliable][-BASELINE_WINDOW:]
    if len(reliable) < MIN_BASELINE_UTTERANCES:
        return None
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for score in reliable:
        for name, value in score.features.items():
            if name.startswith(_RAW_ONLY_PREFIX) or isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
    means = {name: sums[name] / counts[name] for name in sums if counts[name] >= MIN_BASELINE_UTTERANCES}
    return means or None


def analysis_message(score: ProsodyScore) -> ProsodyAnalysisMsg:
    """The ``prosody_analysis`` protocol message for a stored score (docs/protocol.md)."""
    return ProsodyAnalysisMsg(
        transcription_id=score.transcription_id,
        scores=ProsodyScores(
            confidence=score.confidence, stability=score.stability, affability=score.affability
        ),
        reliable=score.reliable,
        reason=score.reason,
    )


class SessionErasedError(NotFoundError):
    """The task's session was deleted before the task ran."""

    code = "SESSION_NOT_FOUND"


class ProsodyAnalysisHandler:
    """The queue handler for :class:`ProsodyTask` (call it with the payload)."""

    def __init__(
        self,
        analyzer: ProsodyAnalyzer,
        uow: UnitOfWorkFactory,
        object_store: ObjectStore,
        notifier: ClientNotifier,
        clock: Clock,
        durable: DurableWriter | None = None,
    ) -> None:
        self.analyzer = analyzer
        # The score waits in the storage spool while the database is unreachable
        # (docs/resilience.md); without a spool it is written straight away.
        self._writes = durable or DurableWriter(StorageApplier(uow, None))
        self.uow = uow
        self.object_store = object_store
        self.notifier = notifier
        self.clock = clock

    async def __call__(self, payload: dict[str, Any]) -> None:
        try:
            request = ProsodyTask.from_payload(payload)
        except InvalidInputError as exc:
            # Redelivering a malformed task cannot help: drop it loudly.
            log.error("dropping prosody task: %s", exc.message)
            return
        try:
            await self.handle(request)
        except SessionErasedError:
            return

    async def handle(self, request: ProsodyTask) -> ProsodyScore:
        """Analyze, store and push one utterance; a repeated task re-sends the stored result."""
        async with self.uow() as tx:
            if await tx.sessions.get(request.session_id) is None:
                # Erased (docs/security.md, "Delete my data"): nothing to analyze or store.
                log.info("dropping prosody task of erased session %s", request.session_id)
                raise SessionErasedError(f"session {request.session_id} was erased")
            existing = await tx.prosody.get_for_transcription(request.transcription_id)
            # Only the baseline's window is read, not the whole session: the read stays the same
            # size however long the conversation runs (docs/prosody.md).
            earlier = (
                []
                if existing
                else await tx.prosody.latest_reliable(
                    request.session_id, BASELINE_WINDOW, exclude_transcription_id=request.transcription_id
                )
            )
        if existing is not None:
            await self.notifier.notify(request.session_id, analysis_message(existing))
            return existing

        baseline = speaker_baseline(earlier)
        result = await self._analyze(request, baseline)
        features: dict[str, float | str | None] = dict(result.features)
        # How many earlier reliable utterances formed the baseline (docs/prosody.md).
        features["baseline_utterances"] = float(len(earlier)) if baseline else 0.0
        score = ProsodyScore(
            score_id=new_id(),
            transcription_id=request.transcription_id,
            confidence=_bounded(result.confidence),
            stability=_bounded(result.stability),
            affability=_bounded(result.affability),
            features=features,
            analyzed_at=self.clock.now(),
            reliable=result.reliable,
            reason=result.reason,
        )
        await self._writes.write(ProsodyInsert(score=score))
        await self.notifier.notify(request.session_id, analysis_message(score))
        return score

    async def _analyze(self, request: ProsodyTask, baseline: Mapping[str, float] | None) -> ProsodyResult:
        try:
            data = await self.object_store.get(request.audio_key)
        except NotFoundError:
            log.warning("prosody: audio %s of %s is missing", request.audio_key, request.transcription_id)
            return _unreliable("audio_missing")
        try:
            pcm, rate = decode_pcm16(data, request.sample_rate)
            return await self.analyzer.analyze(pcm, rate, baseline=baseline)
        except InvalidInputError as exc:
            log.warning("prosody: unusable audio for %s: %s", request.transcription_id, exc.message)
            return _unreliable("invalid_audio")


def _unreliable(reason: str) -> ProsodyResult:
    return ProsodyResult(50.0, 50.0, 50.0, {}, reliable=False, reason=reason)


def _bounded(value: float) -> float:
    return min(100.0, max(0.0, float(value)))


# --- per-session report -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProsodyPoint:
    """One analyzed utterance of a session, in order (``index`` from 1)."""

    index: int
    transcription_id: uuid.UUID
    analyzed_at: str
    scores: dict[str, float]
    reliable: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class ScoreTrend:
    """How one score moved over a session's reliable utterances.

    Attributes:
        mean: Mean over reliable utterances (``None`` without any).
        first: Score of the first reliable utterance.
        last: Score of the last reliable utterance.
        slope_per_utterance: Least-squares slope against the utterance index (points per utterance).
        direction: ``rising`` | ``falling`` | ``steady``, or ``insufficient`` under 2 reliable utterances.
    """

    mean: float | None
    first: float | None
    last: float | None
    slope_per_utterance: float | None
    direction: str


@dataclass(frozen=True, slots=True)
class ProsodyReport:
    """The prosody of a whole session: every utterance and each score's trend."""

    session_id: uuid.UUID
    utterances: int
    reliable_utterances: int
    points: list[ProsodyPoint] = field(default_factory=list)
    trends: dict[str, ScoreTrend] = field(default_factory=dict)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def build_report(session_id: uuid.UUID, scores: Sequence[ProsodyScore]) -> ProsodyReport:
    """Order a session's scores and compute each score's trend over the reliable ones."""
    ordered = sorted(scores, key=lambda s: s.analyzed_at)
    points = [
        ProsodyPoint(
            i,
            s.transcription_id,
            s.analyzed_at.isoformat(),
            {name: getattr(s, name) for name in SCORE_NAMES},
            s.reliable,
            s.reason,
        )
        for i, s in enumerate(ordered, start=1)
    ]
    reliable = [p for p in points if p.reliable]
    trends: dict[str, ScoreTrend] = {}
    for name in SCORE_NAMES:
        ys = [p.scores[name] for p in reliable]
        if len(ys) < 2:
            mean = round(ys[0], 1) if ys else None
            trends[name] = ScoreTrend(mean, mean, mean, None, "insufficient")
            continue
        slope = _slope([float(p.index) for p in reliable], ys)
        direction = "steady"
        if abs(slope) > TREND_THRESHOLD:
            direction = "rising" if slope > 0 else "falling"
        trends[name] = ScoreTrend(round(sum(ys) / len(ys), 1), ys[0], ys[-1], round(slope, 2), direction)
    return ProsodyReport(session_id, len(points), len(reliable), points, trends)


async def session_report(uow: UnitOfWorkFactory, session_id: uuid.UUID) -> ProsodyReport:
    """The prosody report of one session.

    Raises:
        NotFoundError: when the session does not exist.
    """
    async with uow() as tx:
        if await tx.sessions.get(session_id) is None:
            raise NotFoundError(f"session {session_id} not found", code="SESSION_NOT_FOUND")
        scores = await tx.prosody.list_for_session(session_id)
    return build_report(session_id, scores)


async def get_score(uow: UnitOfWorkFactory, transcription_id: uuid.UUID) -> ProsodyScore:
    """The stored score of one utterance.

    Raises:
        NotFoundError: when it has not been analyzed (yet).
    """
    async with uow() as tx:
        score = await tx.prosody.get_for_transcription(transcription_id)
    if score is None:
        raise NotFoundError(
            f"no prosody analysis for transcription {transcription_id} (yet)", code="PROSODY_NOT_FOUND"
        )
    return score
