"""Accounts: users with roles, API keys, web sign-in with CSRF tokens, one-time sign-in links,
and the audit log of administrative actions (docs/security.md, "Accounts and ownership").

Secrets are 256-bit random strings; only their SHA-256 is stored, so a copy of the database does
not let anyone sign in. Passwords are hashed with scrypt (a memory-hard function in the standard
library), each with its own salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from avatar.application.ports.clock import Clock
from avatar.application.ports.storage import AuditEntry, Credential, CredentialKind, UnitOfWorkFactory
from avatar.domain.errors import ConflictError, InvalidInputError, NotFoundError, UnauthenticatedError
from avatar.domain.models import Role, User, new_id

#: The user ``avatar up`` creates on a first start (an admin).
LOCAL_OWNER = "owner"
API_KEY_PREFIX = "avk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 10


def hash_secret(secret: str) -> str:
    """The stored form of a high-entropy secret (API key, cookie, link token)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise InvalidInputError(
            "a user name is 1-64 letters, digits or . _ @ - and starts with a letter or digit",
            code="INVALID_USER_NAME",
        )
    return name


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: the cookie secret and its CSRF token (both shown once)."""

    user: User
    cookie: str
    csrf: str
    expires_at: datetime
    #: How long the browser should keep the cookies (the server checks ``expires_at`` as well).
    max_age_s: int


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from, and how it proved it."""

    user: User
    via: CredentialKind
    #: SHA-256 of the web session's CSRF token (``None`` for API keys, which need none).
    csrf_hash: str | None = None


class AccountService:
    """The account use cases over the unit of work."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        web_session_ttl: timedelta = timedelta(days=7),
        link_ttl: timedelta = timedelta(minutes=10),
    ) -> None:
        self._uow = uow
        self._clock = clock
        self.web_session_ttl = web_session_ttl
        self.link_ttl = link_ttl

    # --- users ----------------------------------------------------------------------------------

    async def create_user(
        self, name: str, *, role: Role = Role.USER, password: str | None = None, actor: User | None = None
    ) -> tuple[User, str]:
        """Create a user and their first API key; the key is returned once and never stored.

        Raises:
            InvalidInputError: a bad name or a too short password.
            ConflictError: the name is taken.
        """
        name = check_name(name)
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"a password needs at least {MIN_PASSWORD_LENGTH} characters", code="WEAK_PASSWORD"
            )
        user = User(user_id=new_id(), name=name, role=role, created_at=self._clock.now())
        key = new_secret(API_KEY_PREFIX)
        async with self._uow() as tx:
            if await tx.accounts.get_user_by_name(name) is not None:
                raise ConflictError(f"a user named {name!r} exists", code="USER_EXISTS")
            await tx.accounts.add_user(user, hash_password(password) if password else None)
            await tx.accounts.add_credential(
                self._credential(user, CredentialKind.API_KEY, key, label="first")
            )
            if actor is not None:
                await tx.accounts.audit(
                    AuditEntry(actor.user_id, "user.create", str(user.user_id), {"role": role.value})
                )
            await tx.commit()
        return user, key

    async def list_users(self) -> list[User]:
        async with self._uow() as tx:
            return await tx.accounts.list_users()

    async def get_user(self, user_id: uuid.UUID) -> User:
        async with self._uow() as tx:
            user = await tx.accounts.get_user(user_id)
        if user is None:
            raise NotFoundError(f"user {user_id} not found", code="USER_NOT_FOUND")
        return user

    async def ensure_local_owner(self) -> tuple[User, bool]:
        """The local owner (the first admin), created when there is no admin yet: on the first start,
        or after only plain users were made (``avatar users create NAME``, the benchmarks).

        Returns the owner and whether it was created now.
        """
        async with self._uow() as tx:
            users = await tx.accounts.list_users()
        admins = [u for u in users if u.is_admin]
        if admins:
            return admins[0], False
        taken = {u.name for u in users}
        name = LOCAL_OWNER if LOCAL_OWNER not in taken else f"{LOCAL_OWNER}-{secrets.token_hex(3)}"
        user, _key = await self.create_user(name, role=Role.ADMIN)
        return user, True

    # --- credentials ----------------------------------------------------------------------------

    def _credential(
        self,
        user: User,
        kind: CredentialKind,
        secret: str,
        *,
        ttl: timedelta | None = None,
        csrf: str | None = None,
        label: str = "",
    ) -> Credential:
        return Credential(
            credential_id=new_id(),
            user_id=user.user_id,
            kind=kind,
            secret_hash=hash_secret(secret),
            csrf_hash=hash_secret(csrf) if csrf else None,
            label=label,
            expires_at=self._clock.now() + ttl if ttl else None,
        )

    async def new_api_key(self, user: User, label: str = "") -> str:
        key = new_secret(API_KEY_PREFIX)
        async with self._uow() as tx:
            await tx.accounts.add_credential(self._credential(user, CredentialKind.API_KEY, key, label=label))
            await tx.commit()
        return key

    async def local_api_key(self, owner: User, stored: str | None) -> tuple[str, bool]:
        """The API key ``avatar up`` prints for the local owner (docs/openai.md): ``stored`` (the
        key kept from an earlier start) while it is still one of the owner's live API keys, else a
        new one. Returns the key and whether it is new (and so must be kept)."""
        if stored:
            caller = await self.authenticate(stored, CredentialKind.API_KEY)
            if caller is not None and caller.user.user_id == owner.user_id:
                return stored, False
        return await self.new_api_key(owner, label="avatar up"), True

    async def issue_link(self, user: User) -> str:
        """A single-use sign-in token valid for :attr:`link_ttl`."""
        token = new_secret()
        async with self._uow() as tx:
            await tx.accounts.add_credential(
                self._credential(user, CredentialKind.LINK, token, ttl=self.link_ttl)
            )
            await tx.commit()
        return token

    async def _start_web_session(self, user: User) -> WebSession:
        cookie, csrf = new_secret(), new_secret()
        cred = self._credential(user, CredentialKind.WEB, cookie, ttl=self.web_session_ttl, csrf=csrf)
        async with self._uow() as tx:
            await tx.accounts.add_credential(cred)
            await tx.commit()
        assert cred.expires_at is not None
        return WebSession(
            user=user,
            cookie=cookie,
            csrf=csrf,
            expires_at=cred.expires_at,
            max_age_s=int(self.web_session_ttl.total_seconds()),
        )

    async def redeem_link(self, token: str) -> WebSession:
        """Spend a sign-in link (once) for a web session."""
        async with self._uow() as tx:
            cred = await tx.accounts.consume_credential(hash_secret(token))
            user = await tx.accounts.get_user(cred.user_id) if cred else None
            await tx.commit()
        if cred is None or cred.kind is not CredentialKind.LINK or user is None or self._expired(cred):
            raise UnauthenticatedError(
                "this sign-in link is invalid, expired or already used; ask for a new one "
                "(`avatar users link NAME`)",
                code="LINK_INVALID",
            )
        return await self._start_web_session(user)

    async def sign_in(self, *, name: str | None, password: str | None, key: str | None) -> WebSession:
        """A web session for a user proving themselves with a password or an API key."""
        user: User | None = None
        if key:
            caller = await self.authenticate(key, CredentialKind.API_KEY)
            user = caller.user if caller else None
        elif name and password:
            async with self._uow() as tx:
                found = await tx.accounts.get_user_by_name(name.strip())
                stored = await tx.accounts.password_hash(found.user_id) if found else None
            if found is not None and stored is not None and verify_password(password, stored):
                user = found
        else:
            raise InvalidInputError("sign in with a name and password, or with an API key")
        if user is None:
            raise UnauthenticatedError("wrong name, password or key", code="SIGN_IN_FAILED")
        return await self._start_web_session(user)

    async def set_password(self, user: User, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInputError(
                f"a password needs at least {MIN_PASSWORD_LENGTH} characters", code="WEAK_PASSWORD"
            )
        async with self._uow() as tx:
            await tx.accounts.set_password(user.user_id, hash_password(password))
            await tx.commit()

    async def sign_out(self, cookie: str) -> None:
        async with self._uow() as tx:
            await tx.accounts.delete_credential(hash_secret(cookie))
            await tx.commit()

    def _expired(self, cred: Credential) -> bool:
        return cred.expires_at is not None and cred.expires_at <= self._clock.now()

    async def authenticate(self, secret: str, kind: CredentialKind) -> Caller | None:
        """The caller a secret of ``kind`` belongs to, or ``None`` (unknown, expired, wrong kind)."""
        if not secret:
            return None
        async with self._uow() as tx:
            cred = await tx.accounts.find_credential(hash_secret(secret))
            if cred is None or cred.kind is not kind or self._expired(cred):
                return None
            user = await tx.accounts.get_user(cred.user_id)
            await tx.accounts.touch_credential(cred.credential_id, self._clock.now())
            await tx.commit()
        return Caller(user=user, via=kind, csrf_hash=cred.csrf_hash) if user else None

    # --- audit ----------------------------------------------------------------------------------

    async def audit(
        self, actor: User, action: str, target: str, detail: Mapping[str, object] | None = None
    ) -> None:
        async with self._uow() as tx:
            await tx.accounts.audit(AuditEntry(actor.user_id, action, target, dict(detail or {})))
            await tx.commit()

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        async with self._uow() as tx:
            return await tx.accounts.audit_entries(limit)
