"""Who is calling: ``Authorization: Bearer KEY`` or the web sign-in cookie, with CSRF protection
on state-changing requests (docs/security.md, "Accounts and ownership").

The cookie ``avatar_session`` is HttpOnly and SameSite=Strict; a request that changes something
(any method but GET, HEAD, OPTIONS) must also carry the session's CSRF token in ``X-CSRF-Token``,
equal to the readable ``avatar_csrf`` cookie (double submit) and to the token stored for the
session. API keys need no CSRF token: a browser never adds them by itself.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Response

from avatar.application.accounts import AccountService, WebSession, hash_secret
from avatar.application.ports.storage import CredentialKind
from avatar.bootstrap import Services
from avatar.domain.errors import ForbiddenError, UnauthenticatedError
from avatar.domain.models import User

SESSION_COOKIE = "avatar_session"
CSRF_COOKIE = "avatar_csrf"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def accounts_of(request: Request) -> AccountService:
    services: Services = request.app.state.services
    return services.accounts


async def current_user(request: Request) -> User:
    """The signed-in user; 401 without a valid credential, 403 without the CSRF token."""
    accounts = accounts_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise UnauthenticatedError("use `Authorization: Bearer KEY`", code="UNAUTHENTICATED")
        caller = await accounts.authenticate(key.strip(), CredentialKind.API_KEY)
        if caller is None:
            raise UnauthenticatedError("this API key is not valid", code="INVALID_KEY")
        return caller.user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise UnauthenticatedError(
            "sign in first: an API key in `Authorization: Bearer KEY`, or the web sign-in",
            code="UNAUTHENTICATED",
        )
    caller = await accounts.authenticate(cookie, CredentialKind.WEB)
    if caller is None:
        raise UnauthenticatedError("the sign-in has expired; sign in again", code="UNAUTHENTICATED")
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        double = request.cookies.get(CSRF_COOKIE, "")
        stored = caller.csrf_hash or ""
        if not (
            sent and hmac.compare_digest(sent, double) and hmac.compare_digest(hash_secret(sent), stored)
        ):
            raise ForbiddenError(
                f"missing or wrong {CSRF_HEADER} header (copy the {CSRF_COOKIE} cookie)", code="CSRF_FAILED"
            )
    return caller.user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise ForbiddenError("only an admin may do this", code="ADMIN_ONLY")
    return user


CallerDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(admin_user)]


def set_sign_in_cookies(request: Request, response: Response, web: WebSession) -> None:
    secure = request.url.scheme == "https"
    # The expiry is enforced by the server too (the stored credential's expires_at).
    age = web.max_age_s
    response.set_cookie(
        SESSION_COOKIE, web.cookie, httponly=True, samesite="strict", secure=secure, path="/", max_age=age
    )
    response.set_cookie(
        CSRF_COOKIE, web.csrf, httponly=False, samesite="strict", secure=secure, path="/", max_age=age
    )


def clear_sign_in_cookies(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
