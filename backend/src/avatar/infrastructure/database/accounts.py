"""Repositories of accounts, credentials, the audit log and data erasure (docs/security.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping

from avatar.application.ports.storage import AuditEntry, Credential, CredentialKind
from avatar.domain.models import Role, User
from avatar.infrastructure.database import tables as t
from avatar.infrastructure.database.transaction import Transaction

#: ``system_logs.level`` of the audit entries.
AUDIT_LEVEL = "audit"


def _user(row: RowMapping) -> User:
    return User(
        user_id=row["user_id"], name=row["name"], role=Role(row["role"]), created_at=row["created_at"]
    )


def _credential(row: RowMapping) -> Credential:
    return Credential(
        credential_id=row["credential_id"],
        user_id=row["user_id"],
        kind=CredentialKind(row["kind"]),
        secret_hash=row["secret_hash"],
        csrf_hash=row["csrf_hash"],
        label=row["label"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


class SqlAccountRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add_user(self, user: User, password_hash: str | None = None) -> None:
        values: dict[str, Any] = {
            "user_id": user.user_id,
            "name": user.name,
            "role": user.role.value,
            "password_hash": password_hash,
        }
        if user.created_at is not None:
            values["created_at"] = user.created_at
        await self._tx.write(insert(t.users).values(**values))

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        row = (await self._tx.read(select(t.users).where(t.users.c.user_id == user_id))).mappings().first()
        return _user(row) if row is not None else None

    async def get_user_by_name(self, name: str) -> User | None:
        row = (await self._tx.read(select(t.users).where(t.users.c.name == name))).mappings().first()
        return _user(row) if row is not None else None

    async def list_users(self) -> list[User]:
        rows = await self._tx.read(select(t.users).order_by(t.users.c.created_at, t.users.c.name))
        return [_user(row) for row in rows.mappings()]

    async def delete_user(self, user_id: uuid.UUID) -> bool:
        stmt = delete(t.users).where(t.users.c.user_id == user_id).returning(t.users.c.user_id)
        return (await self._tx.write(stmt)).first() is not None

    async def password_hash(self, user_id: uuid.UUID) -> str | None:
        stmt = select(t.users.c.password_hash).where(t.users.c.user_id == user_id)
        value = (await self._tx.read(stmt)).scalar_one_or_none()
        return str(value) if value is not None else None

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._tx.write(
            update(t.users).where(t.users.c.user_id == user_id).values(password_hash=password_hash)
        )

    async def add_credential(self, credential: Credential) -> None:
        await self._tx.write(
            insert(t.credentials).values(
                credential_id=credential.credential_id,
                user_id=credential.user_id,
                kind=credential.kind.value,
                secret_hash=credential.secret_hash,
                csrf_hash=credential.csrf_hash,
                label=credential.label,
                expires_at=credential.expires_at,
            )
        )

    async def find_credential(self, secret_hash: str) -> Credential | None:
        stmt = select(t.credentials).where(t.credentials.c.secret_hash == secret_hash)
        row = (await self._tx.read(stmt)).mappings().first()
        return _credential(row) if row is not None else None

    async def consume_credential(self, secret_hash: str) -> Credential | None:
        stmt = (
            delete(t.credentials)
            .where(t.credentials.c.secret_hash == secret_hash)
            .returning(*t.credentials.c)
        )
        row = (await self._tx.write(stmt)).mappings().first()
        return _credential(row) if row is not None else None

    async def delete_credential(self, secret_hash: str) -> bool:
        stmt = (
            delete(t.credentials)
            .where(t.credentials.c.secret_hash == secret_hash)
            .returning(t.credentials.c.credential_id)
        )
        return (await self._tx.write(stmt)).first() is not None

    async def touch_credential(self, credential_id: uuid.UUID, now: datetime) -> None:
        await self._tx.write(
            update(t.credentials)
            .where(t.credentials.c.credential_id == credential_id)
            .values(last_used_at=now)
        )

    async def audit(self, entry: AuditEntry) -> None:
        await self._tx.write(
            insert(t.system_logs).values(
                level=AUDIT_LEVEL,
                message=entry.action,
                metadata={
                    "actor_id": str(entry.actor_id) if entry.actor_id else None,
                    "target": entry.target,
                    "detail": dict(entry.detail),
                },
            )
        )

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        stmt = (
            select(t.system_logs)
            .where(t.system_logs.c.level == AUDIT_LEVEL)
            .order_by(t.system_logs.c.log_id.desc())
            .limit(limit)
        )
        out = []
        for row in (await self._tx.read(stmt)).mappings():
            meta = dict(row["metadata"])
            actor = meta.get("actor_id")
            out.append(
                AuditEntry(
                    actor_id=uuid.UUID(actor) if isinstance(actor, str) else None,
                    action=row["message"],
                    target=str(meta.get("target", "")),
                    detail=dict(meta.get("detail") or {}),
                    created_at=row["created_at"],
                )
            )
        return out


class SqlErasureRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def sessions_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = select(t.sessions.c.session_id).where(t.sessions.c.owner_id == owner_id)
        return list((await self._tx.read(stmt)).scalars())

    async def voice_profiles_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = select(t.voice_profiles.c.profile_id).where(t.voice_profiles.c.user_id == owner_id)
        return list((await self._tx.read(stmt)).scalars())

    async def turns_of(self, session_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = select(t.conversation_turns.c.turn_id).where(t.conversation_turns.c.session_id == session_id)
        return list((await self._tx.read(stmt)).scalars())

    async def object_urls_of(self, session_id: uuid.UUID) -> list[str]:
        turns = select(t.conversation_turns.c.turn_id).where(t.conversation_turns.c.session_id == session_id)
        inputs = select(t.transcriptions.c.audio_url).where(
            t.transcriptions.c.turn_id.in_(turns), t.transcriptions.c.audio_url.is_not(None)
        )
        replies = select(t.synthesized_audios.c.audio_url).where(t.synthesized_audios.c.turn_id.in_(turns))
        urls = list((await self._tx.read(inputs)).scalars()) + list((await self._tx.read(replies)).scalars())
        return [str(u) for u in urls]

    async def erase_session(self, session_id: uuid.UUID) -> dict[str, int]:
        turns = select(t.conversation_turns.c.turn_id).where(t.conversation_turns.c.session_id == session_id)
        transcriptions = select(t.transcriptions.c.transcription_id).where(
            t.transcriptions.c.turn_id.in_(turns)
        )
        ps, sa, me = t.prosody_scores, t.synthesized_audios, t.memories
        tr, cs, ct, se = t.transcriptions, t.conversation_summaries, t.conversation_turns, t.sessions
        # Children first, so each table's count is what this erasure removed (not a cascade).
        steps: list[tuple[str, Any]] = [
            ("prosody", delete(ps).where(ps.c.transcription_id.in_(transcriptions)).returning(ps.c.score_id)),
            ("synthesized_audio", delete(sa).where(sa.c.turn_id.in_(turns)).returning(sa.c.audio_id)),
            ("memories", delete(me).where(me.c.session_id == session_id).returning(me.c.memory_id)),
            ("transcriptions", delete(tr).where(tr.c.turn_id.in_(turns)).returning(tr.c.transcription_id)),
            ("summaries", delete(cs).where(cs.c.session_id == session_id).returning(cs.c.session_id)),
            ("turns", delete(ct).where(ct.c.session_id == session_id).returning(ct.c.turn_id)),
            ("sessions", delete(se).where(se.c.session_id == session_id).returning(se.c.session_id)),
        ]
        counts: dict[str, int] = {}
        for name, stmt in steps:
            counts[name] = len((await self._tx.write(stmt)).all())
        return counts
