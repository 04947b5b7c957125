"""Accounts REST: sign-in (password, API key, one-time link), ``/api/v1/me``, deleting one's data,
and the admin's users and audit log (docs/security.md, "Accounts and ownership")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.erasure import ErasureReport
from avatar.domain.models import Role, User
from avatar.presentation.auth import (
    SESSION_COOKIE,
    AdminDep,
    CallerDep,
    accounts_of,
    clear_sign_in_cookies,
    set_sign_in_cookies,
)
from avatar.presentation.deps import ServicesDep

router = APIRouter(tags=["accounts"])


class UserPublic(BaseModel):
    user_id: uuid.UUID
    name: str
    role: str
    created_at: datetime | None = None

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(user_id=user.user_id, name=user.name, role=user.role.value, created_at=user.created_at)


class UserList(BaseModel):
    users: list[UserPublic]


class SignIn(BaseModel):
    """Either ``name`` and ``password``, or ``key`` (an API key)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=1024)
    key: str | None = Field(default=None, max_length=256)


class SignedIn(BaseModel):
    user: UserPublic
    csrf_token: str = Field(description="Send it as X-CSRF-Token on requests that change something")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    admin: bool = False
    password: str | None = Field(default=None, max_length=1024)


class UserCreated(BaseModel):
    user: UserPublic
    api_key: str = Field(description="Shown once; only its hash is stored")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024)


class ApiKeyCreated(BaseModel):
    api_key: str = Field(description="Shown once; only its hash is stored")


class ErasurePublic(BaseModel):
    """What a deletion removed (rows per table, objects in the object store)."""

    rows: dict[str, int]
    objects: int
    sessions: list[uuid.UUID]
    voice_profiles: list[uuid.UUID]
    account_deleted: bool

    @classmethod
    def of(cls, report: ErasureReport) -> ErasurePublic:
        return cls(
            rows=dict(report.rows),
            objects=report.objects,
            sessions=report.sessions,
            voice_profiles=report.voice_profiles,
            account_deleted=report.account_deleted,
        )


class AuditEntryPublic(BaseModel):
    actor_id: uuid.UUID | None
    action: str
    target: str
    detail: dict[str, object]
    created_at: datetime | None


class AuditLog(BaseModel):
    entries: list[AuditEntryPublic]


@router.post("/api/v1/auth/login", response_model=SignedIn)
async def sign_in(body: SignIn, request: Request, response: Response) -> SignedIn:
    """Sign a browser in (sets the HttpOnly session cookie and the CSRF cookie)."""
    web = await accounts_of(request).sign_in(name=body.name, password=body.password, key=body.key)
    set_sign_in_cookies(request, response, web)
    return SignedIn(user=UserPublic.of(web.user), csrf_token=web.csrf)


@router.get("/api/v1/auth/link", response_class=RedirectResponse, status_code=303)
async def sign_in_with_link(
    request: Request, token: Annotated[str, Query(min_length=1, max_length=256)]
) -> RedirectResponse:
    """Spend a one-time sign-in link (printed by ``avatar up``) and go to the app."""
    web = await accounts_of(request).redeem_link(token)
    response = RedirectResponse("/", status_code=303)
    set_sign_in_cookies(request, response, web)
    return response


@router.post("/api/v1/auth/logout", status_code=204, response_class=Response)
async def sign_out(request: Request, _user: CallerDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await accounts_of(request).sign_out(cookie)
    response = Response(status_code=204)
    clear_sign_in_cookies(response)
    return response


@router.get("/api/v1/me", response_model=UserPublic)
async def me(user: CallerDep) -> UserPublic:
    return UserPublic.of(user)


@router.post("/api/v1/me/password", status_code=204, response_class=Response)
async def set_my_password(body: PasswordChange, request: Request, user: CallerDep) -> Response:
    await accounts_of(request).set_password(user, body.password)
    return Response(status_code=204)


@router.post("/api/v1/me/keys", status_code=201, response_model=ApiKeyCreated)
async def new_api_key(request: Request, user: CallerDep) -> ApiKeyCreated:
    return ApiKeyCreated(api_key=await accounts_of(request).new_api_key(user))


@router.delete("/api/v1/me/data", response_model=ErasurePublic)
async def delete_my_data(services: ServicesDep, user: CallerDep) -> ErasurePublic:
    """Delete every conversation, recording, memory, prosody score and voice profile of mine
    (the account stays); repeating it removes nothing more."""
    report = await services.eraser.erase_user(user.user_id, delete_account=False)
    return ErasurePublic.of(report)


@router.get("/api/v1/users", response_model=UserList)
async def list_users(services: ServicesDep, _admin: AdminDep) -> UserList:
    return UserList(users=[UserPublic.of(u) for u in await services.accounts.list_users()])


@router.post("/api/v1/users", status_code=201, response_model=UserCreated)
async def create_user(body: UserCreate, services: ServicesDep, admin: AdminDep) -> UserCreated:
    role = Role.ADMIN if body.admin else Role.USER
    user, key = await services.accounts.create_user(body.name, role=role, password=body.password, actor=admin)
    return UserCreated(user=UserPublic.of(user), api_key=key)


@router.delete("/api/v1/users/{user_id}", response_model=ErasurePublic)
async def delete_user(user_id: uuid.UUID, services: ServicesDep, admin: AdminDep) -> ErasurePublic:
    """Delete a user with all their data (audited). Deleting an already deleted user is a 404."""
    target = await services.accounts.get_user(user_id)
    report = await services.eraser.erase_user(target.user_id, delete_account=True)
    await services.accounts.audit(admin, "user.delete", str(target.user_id), {"rows": dict(report.rows)})
    return ErasurePublic.of(report)


@router.get("/api/v1/audit", response_model=AuditLog)
async def audit_log(
    services: ServicesDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AuditLog:
    entries = await services.accounts.audit_entries(limit)
    return AuditLog(
        entries=[
            AuditEntryPublic(
                actor_id=e.actor_id,
                action=e.action,
                target=e.target,
                detail=dict(e.detail),
                created_at=e.created_at,
            )
            for e in entries
        ]
    )
