"""Prosody REST: ``GET /api/v1/prosody/{transcription_id}`` and ``GET /api/v1/sessions/{id}/prosody``.

The analysis itself runs as a queue handler, wired by the composition root (``avatar.bootstrap``).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from avatar.application.prosody import ProsodyReport, get_score, session_report
from avatar.domain.errors import InvalidInputError, NotFoundError
from avatar.domain.models import ProsodyScore
from avatar.presentation.auth import CallerDep
from avatar.presentation.deps import ContainerDep, ServicesDep
from avatar.presentation.ownership import audit_if_foreign, visible_session

router = APIRouter(tags=["prosody"])


class ScoresPublic(BaseModel):
    confidence: float
    stability: float
    affability: float


class ProsodyScorePublic(BaseModel):
    score_id: uuid.UUID
    transcription_id: uuid.UUID
    scores: ScoresPublic
    reliable: bool
    reason: str | None
    features: dict[str, float | str | None]
    analyzed_at: datetime

    @classmethod
    def of(cls, score: ProsodyScore) -> ProsodyScorePublic:
        features = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in score.features.items()
        }
        return cls(
            score_id=score.score_id,
            transcription_id=score.transcription_id,
            scores=ScoresPublic(
                confidence=score.confidence, stability=score.stability, affability=score.affability
            ),
            reliable=score.reliable,
            reason=score.reason,
            features=features,
            analyzed_at=score.analyzed_at,
        )


class ProsodyPointPublic(BaseModel):
    index: int
    transcription_id: uuid.UUID
    analyzed_at: str
    scores: ScoresPublic
    reliable: bool
    reason: str | None


class ScoreTrendPublic(BaseModel):
    mean: float | None
    first: float | None
    last: float | None
    slope_per_utterance: float | None
    direction: str


class ProsodyReportPublic(BaseModel):
    session_id: uuid.UUID
    utterances: int
    reliable_utterances: int
    points: list[ProsodyPointPublic]
    trends: dict[str, ScoreTrendPublic]

    @classmethod
    def of(cls, report: ProsodyReport) -> ProsodyReportPublic:
        return cls(
            session_id=report.session_id,
            utterances=report.utterances,
            reliable_utterances=report.reliable_utterances,
            points=[
                ProsodyPointPublic(
                    index=p.index,
                    transcription_id=p.transcription_id,
                    analyzed_at=p.analyzed_at,
                    scores=ScoresPublic(**p.scores),
                    reliable=p.reliable,
                    reason=p.reason,
                )
                for p in report.points
            ],
            trends={
                name: ScoreTrendPublic(
                    mean=t.mean,
                    first=t.first,
                    last=t.last,
                    slope_per_utterance=t.slope_per_utterance,
                    direction=t.direction,
                )
                for name, t in report.trends.items()
            },
        )


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{raw!r} is not a {what} (a UUID)") from exc


@router.get("/api/v1/prosody/{transcription_id}")
async def prosody_of_utterance(
    transcription_id: str, container: ContainerDep, services: ServicesDep, user: CallerDep
) -> ProsodyScorePublic:
    """The scores, reliability and raw features of one analyzed utterance (404 until analyzed,
    and for somebody else's utterance)."""
    tid = _uuid(transcription_id, "transcription id")
    async with container.uow() as tx:
        owner = await tx.transcriptions.owner_of(tid)
    if owner is None or not user.may_see(owner):
        raise NotFoundError(f"no prosody analysis for transcription {tid}", code="PROSODY_NOT_FOUND")
    await audit_if_foreign(services, user, owner, "prosody.read", str(tid))
    score = await get_score(container.uow, tid)
    return ProsodyScorePublic.of(score)


@router.get("/api/v1/sessions/{session_id}/prosody")
async def prosody_report(
    session_id: str, container: ContainerDep, services: ServicesDep, user: CallerDep
) -> ProsodyReportPublic:
    """Every analyzed utterance of a session in order, and each score's trend."""
    sid = _uuid(session_id, "session id")
    await visible_session(container, services, sid, user, "session.prosody.read")
    report = await session_report(container.uow, sid)
    return ProsodyReportPublic.of(report)
