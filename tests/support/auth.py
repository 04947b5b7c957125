"""Accounts for tests: a user with an API key in a container's database (docs/security.md)."""

from __future__ import annotations

import uuid

from avatar.application.accounts import AccountService
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.bootstrap import Container
from avatar.domain.models import Role, User, new_id


async def make_user(container: Container, name: str = "tester", *, admin: bool = False) -> tuple[User, str]:
    """Create a user in the container's database; returns it and its API key."""
    accounts = AccountService(container.uow, container.clock)
    return await accounts.create_user(name, role=Role.ADMIN if admin else Role.USER)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def seed_owner(uow: UnitOfWorkFactory, name: str | None = None) -> uuid.UUID:
    """A user row written straight through a unit of work (for tests that seed sessions by hand)."""
    user = User(user_id=new_id(), name=name or f"owner-{uuid.uuid4().hex[:8]}", role=Role.USER)
    async with uow() as tx:
        await tx.accounts.add_user(user)
        await tx.commit()
    return user.user_id


async def owner_sign_in(container: Container, base: str) -> tuple[str, str]:
    """What ``avatar up`` does on localhost: the local owner (created on the first start) and a
    one-time sign-in link for the browser; also an API key of the owner for the test's own calls."""
    accounts = AccountService(container.uow, container.clock)
    owner, _created = await accounts.ensure_local_owner()
    token = await accounts.issue_link(owner)
    return f"{base}/api/v1/auth/link?token={token}", await accounts.new_api_key(owner)
