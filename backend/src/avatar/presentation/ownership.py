"""Ownership checks shared by the routes (docs/security.md, "Accounts and ownership").

Somebody else's session answers exactly like a missing one (404), so ids cannot be probed. An
admin may read and change everything; each such access to another user's data is audited.
"""

from __future__ import annotations

import uuid

from avatar.bootstrap import Container, Services
from avatar.domain.errors import ForbiddenError, NotFoundError
from avatar.domain.models import Session, User


async def audit_if_foreign(
    services: Services, viewer: User, owner_id: uuid.UUID | None, action: str, target: str
) -> None:
    """Record an admin's access to another user's data."""
    if owner_id != viewer.user_id:
        await services.accounts.audit(viewer, action, target, {"owner_id": str(owner_id)})


async def visible_session(
    container: Container, services: Services, session_id: uuid.UUID, viewer: User, action: str
) -> Session:
    """The session if ``viewer`` may see it; ``SESSION_NOT_FOUND`` otherwise."""
    async with container.uow() as tx:
        session = await tx.sessions.get(session_id)
    if session is None or not viewer.may_see(session.owner_id):
        raise NotFoundError(f"session {session_id} not found", code="SESSION_NOT_FOUND")
    await audit_if_foreign(services, viewer, session.owner_id, action, str(session_id))
    return session


def owner_filter(viewer: User, all_users: bool) -> uuid.UUID | None:
    """The owner to list for: the viewer's own, or everyone's for an admin asking ``all_users``."""
    if all_users and not viewer.is_admin:
        raise ForbiddenError("only an admin may list everyone's data", code="ADMIN_ONLY")
    return None if all_users else viewer.user_id
