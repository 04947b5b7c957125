"""Accounts and ownership over a real uvicorn server (docs/security.md, "Accounts and ownership"):
API keys, the web sign-in with its HttpOnly cookie and CSRF token, one-time sign-in links,
passwords, the admin's user management, and another user's ids answering 404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from avatar.application.accounts import AccountService, hash_password, verify_password
from avatar.bootstrap import Container
from avatar.domain.models import Role
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import create_session, running_server
from tests.fakes import FakeClock, fake_container
from tests.support.auth import bearer, make_user


@dataclass
class Served:
    base: str
    container: Container
    accounts: AccountService


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    settings = Settings(environment="test")
    container = fake_container(settings)
    await container.queue.start()
    async with running_server(create_app(settings, container)) as base:
        yield Served(base, container, AccountService(container.uow, container.clock))


def _code(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_every_route_needs_a_credential(served: Served) -> None:
    sid = uuid.uuid4()
    routes = [
        ("GET", "/api/v1/sessions"),
        ("POST", "/api/v1/sessions"),
        ("GET", f"/api/v1/sessions/{sid}"),
        ("DELETE", f"/api/v1/sessions/{sid}"),
        ("GET", f"/api/v1/sessions/{sid}/turns"),
        ("GET", f"/api/v1/sessions/{sid}/prosody"),
        ("GET", f"/api/v1/prosody/{sid}"),
        ("GET", "/api/v1/memory/search?q=hello"),
        ("GET", "/api/v1/voice-profiles"),
        ("GET", f"/api/v1/voice-profiles/{sid}"),
        ("GET", f"/api/v1/voice-profiles/{sid}/audio"),
        ("DELETE", f"/api/v1/voice-profiles/{sid}"),
        ("GET", "/api/v1/me"),
        ("DELETE", "/api/v1/me/data"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("DELETE", f"/api/v1/users/{sid}"),
        ("GET", "/api/v1/audit"),
    ]
    async with httpx.AsyncClient(base_url=served.base) as http:
        for method, path in routes:
            _code(await http.request(method, path), 401, "UNAUTHENTICATED")
            _code(await http.request(method, path, headers=bearer("avk_guessed")), 401, "INVALID_KEY")
            basic = await http.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="})
            _code(basic, 401, "UNAUTHENTICATED")
            async with httpx.AsyncClient(
                base_url=served.base, cookies={"avatar_session": "forged"}
            ) as forged:
                _code(await forged.request(method, path), 401, "UNAUTHENTICATED")
        # The health probes stay open (orchestrators and load balancers call them).
        assert (await http.get("/api/v1/health/live")).status_code == 200


async def test_another_users_session_answers_404_and_an_admin_sees_it_audited(served: Served) -> None:
    alice, alice_key = await make_user(served.container, "alice")
    _bob, bob_key = await make_user(served.container, "bob")
    admin, admin_key = await make_user(served.container, "root", admin=True)
    created = await create_session(served.base, alice_key)
    sid = created["session_id"]
    async with httpx.AsyncClient(base_url=served.base) as http:
        for path in (
            f"/api/v1/sessions/{sid}",
            f"/api/v1/sessions/{sid}/turns",
            f"/api/v1/sessions/{sid}/prosody",
        ):
            _code(await http.get(path, headers=bearer(bob_key)), 404, "SESSION_NOT_FOUND")
            assert (await http.get(path, headers=bearer(alice_key))).status_code == 200
        _code(await http.delete(f"/api/v1/sessions/{sid}", headers=bearer(bob_key)), 404, "SESSION_NOT_FOUND")
        _code(
            await http.get(
                "/api/v1/memory/search", params={"q": "x", "session_id": sid}, headers=bearer(bob_key)
            ),
            404,
            "SESSION_NOT_FOUND",
        )
        assert (await http.get("/api/v1/sessions", headers=bearer(bob_key))).json()["sessions"] == []
        mine = (await http.get("/api/v1/sessions", headers=bearer(alice_key))).json()["sessions"]
        assert [s["session_id"] for s in mine] == [sid]
        _code(await http.get("/api/v1/sessions?all_users=true", headers=bearer(bob_key)), 403, "ADMIN_ONLY")

        # The admin lists only their own by default, everyone's on request, and reads any session.
        assert (await http.get("/api/v1/sessions", headers=bearer(admin_key))).json()["sessions"] == []
        everyone = (await http.get("/api/v1/sessions?all_users=true", headers=bearer(admin_key))).json()
        assert sid in [s["session_id"] for s in everyone["sessions"]]
        assert (await http.get(f"/api/v1/sessions/{sid}", headers=bearer(admin_key))).status_code == 200
        audit = (await http.get("/api/v1/audit", headers=bearer(admin_key))).json()["entries"]
        assert {
            "actor_id": str(admin.user_id),
            "action": "session.read",
            "target": sid,
            "detail": {"owner_id": str(alice.user_id)},
        }.items() <= audit[0].items()
        # The owner's own reads are not audit events.
        assert all(e["actor_id"] != str(alice.user_id) for e in audit)


async def test_web_sign_in_sets_an_httponly_cookie_and_state_changes_need_the_csrf_token(
    served: Served,
) -> None:
    _user, key = await make_user(served.container, "carol")
    async with httpx.AsyncClient(base_url=served.base) as http:
        _code(await http.post("/api/v1/auth/login", json={"key": "avk_wrong"}), 401, "SIGN_IN_FAILED")
        _code(await http.post("/api/v1/auth/login", json={}), 422, "INVALID_INPUT")
        _code(await http.post("/api/v1/auth/login", json={"key": key, "extra": 1}), 422, "INVALID_INPUT")
        signed = await http.post("/api/v1/auth/login", json={"key": key})
        assert signed.status_code == 200, signed.text
        set_cookies = signed.headers.get_list("set-cookie")
        session_cookie = next(c for c in set_cookies if c.startswith("avatar_session="))
        csrf_cookie = next(c for c in set_cookies if c.startswith("avatar_csrf="))
        assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie
        assert "HttpOnly" not in csrf_cookie and "SameSite=strict" in csrf_cookie
        csrf = signed.json()["csrf_token"]
        assert http.cookies["avatar_csrf"] == csrf

        assert (await http.get("/api/v1/me")).json()["name"] == "carol"  # reads need no token
        _code(await http.post("/api/v1/sessions", json={}), 403, "CSRF_FAILED")
        _code(
            await http.post("/api/v1/sessions", json={}, headers={"X-CSRF-Token": "guess"}),
            403,
            "CSRF_FAILED",
        )
        # The header must match the cookie (double submit) and the token stored for this sign-in.
        other = await http.post("/api/v1/auth/login", json={"key": key})
        other_csrf = other.json()["csrf_token"]
        http.cookies.set("avatar_csrf", csrf)
        _code(
            await http.post("/api/v1/sessions", json={}, headers={"X-CSRF-Token": other_csrf}),
            403,
            "CSRF_FAILED",
        )
        http.cookies.set("avatar_csrf", other_csrf)
        created = await http.post("/api/v1/sessions", json={}, headers={"X-CSRF-Token": other_csrf})
        assert created.status_code == 201, created.text

        # Signing out ends that sign-in for good.
        cookie = http.cookies["avatar_session"]
        assert (
            await http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": other_csrf})
        ).status_code == 204
    async with httpx.AsyncClient(base_url=served.base, cookies={"avatar_session": cookie}) as replay:
        _code(await replay.get("/api/v1/me"), 401, "UNAUTHENTICATED")


async def test_a_sign_in_link_works_once_and_not_after_it_expires(served: Served) -> None:
    owner, created = await served.accounts.ensure_local_owner()
    assert created and owner.role is Role.ADMIN and owner.name == "owner"
    again, created_again = await served.accounts.ensure_local_owner()
    assert again == owner and not created_again
    token = await served.accounts.issue_link(owner)
    async with httpx.AsyncClient(base_url=served.base) as http:
        used = await http.get("/api/v1/auth/link", params={"token": token})
        assert used.status_code == 303 and used.headers["location"] == "/"
        assert (await http.get("/api/v1/me")).json()["role"] == "admin"
    async with httpx.AsyncClient(base_url=served.base) as http:
        _code(await http.get("/api/v1/auth/link", params={"token": token}), 401, "LINK_INVALID")
        _code(await http.get("/api/v1/auth/link", params={"token": "made-up"}), 401, "LINK_INVALID")
        _code(await http.get("/api/v1/auth/link"), 422, "INVALID_INPUT")
        late = await served.accounts.issue_link(owner)
        clock = served.container.clock
        assert isinstance(clock, FakeClock)
        clock.advance(served.accounts.link_ttl.total_seconds() + 1)
        _code(await http.get("/api/v1/auth/link", params={"token": late}), 401, "LINK_INVALID")
        _code(await http.get("/api/v1/me"), 401, "UNAUTHENTICATED")
        # An API key is not a link, nor the other way round.
        _user, key = await make_user(served.container, "dan")
        _code(await http.get("/api/v1/auth/link", params={"token": key}), 401, "LINK_INVALID")


async def test_passwords_and_the_admins_user_management(served: Served) -> None:
    _admin, admin_key = await make_user(served.container, "root", admin=True)
    _user, user_key = await make_user(served.container, "erin")
    async with httpx.AsyncClient(base_url=served.base) as http:
        _code(
            await http.post("/api/v1/users", json={"name": "x"}, headers=bearer(user_key)), 403, "ADMIN_ONLY"
        )
        _code(await http.get("/api/v1/users", headers=bearer(user_key)), 403, "ADMIN_ONLY")
        made = await http.post(
            "/api/v1/users",
            json={"name": "frank", "password": "correct horse battery"},
            headers=bearer(admin_key),
        )
        assert made.status_code == 201, made.text
        frank_key = made.json()["api_key"]
        assert frank_key.startswith("avk_") and made.json()["user"]["role"] == "user"
        assert (await http.get("/api/v1/me", headers=bearer(frank_key))).json()["name"] == "frank"
        dup = await http.post("/api/v1/users", json={"name": "frank"}, headers=bearer(admin_key))
        _code(dup, 409, "USER_EXISTS")
        _code(
            await http.post("/api/v1/users", json={"name": "bad name!"}, headers=bearer(admin_key)),
            422,
            "INVALID_USER_NAME",
        )
        _code(
            await http.post(
                "/api/v1/users", json={"name": "gina", "password": "short"}, headers=bearer(admin_key)
            ),
            422,
            "WEAK_PASSWORD",
        )
        names = [
            u["name"] for u in (await http.get("/api/v1/users", headers=bearer(admin_key))).json()["users"]
        ]
        assert {"root", "erin", "frank"} <= set(names)
        audit = (await http.get("/api/v1/audit", headers=bearer(admin_key))).json()["entries"]
        assert any(e["action"] == "user.create" for e in audit)

        wrong = await http.post(
            "/api/v1/auth/login", json={"name": "frank", "password": "wrong horse battery"}
        )
        _code(wrong, 401, "SIGN_IN_FAILED")
        _code(
            await http.post(
                "/api/v1/auth/login", json={"name": "nobody", "password": "correct horse battery"}
            ),
            401,
            "SIGN_IN_FAILED",
        )
        ok = await http.post(
            "/api/v1/auth/login", json={"name": "frank", "password": "correct horse battery"}
        )
        assert ok.status_code == 200 and ok.json()["user"]["name"] == "frank"
        # Changing one's password needs the CSRF token with a cookie sign-in.
        _code(
            await http.post("/api/v1/me/password", json={"password": "a new long password"}),
            403,
            "CSRF_FAILED",
        )
        changed = await http.post(
            "/api/v1/me/password",
            json={"password": "a new long password"},
            headers={"X-CSRF-Token": ok.json()["csrf_token"]},
        )
        assert changed.status_code == 204
        # A new API key works alongside the first.
        extra = await http.post("/api/v1/me/keys", headers=bearer(frank_key))
        assert extra.status_code == 201
        assert (await http.get("/api/v1/me", headers=bearer(extra.json()["api_key"]))).json()[
            "name"
        ] == "frank"


def test_secrets_are_stored_hashed() -> None:
    stored = hash_password("correct horse battery")
    assert "correct" not in stored and stored.startswith("scrypt$")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterz", stored)
    assert not verify_password("x", "not-a-hash")
    assert hash_password("same") != hash_password("same")  # salted


@pytest.mark.parametrize("name", ["", " ", "-leading", "a" * 65, "white space", "semi;colon"])
async def test_bad_user_names_are_refused(name: str) -> None:
    container = fake_container()
    from avatar.domain.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        await AccountService(container.uow, container.clock).create_user(name)


# --- admission (docs/security.md, "Admission") ---------------------------------------------------


@pytest_asyncio.fixture
async def strict() -> AsyncIterator[Served]:
    settings = Settings(environment="test")
    settings.conversation.max_sessions = 10
    settings.conversation.max_sessions_per_user = 1
    settings.conversation.session_creations_per_user_per_minute = 3
    settings.conversation.session_creations_per_address_per_minute = 5
    container = fake_container(settings)
    await container.queue.start()
    async with running_server(create_app(settings, container)) as base:
        yield Served(base, container, AccountService(container.uow, container.clock))


async def test_session_creation_is_limited_per_user_and_per_address(strict: Served) -> None:
    _a, a_key = await make_user(strict.container, "ann")
    _b, b_key = await make_user(strict.container, "ben")
    async with httpx.AsyncClient(base_url=strict.base) as http:
        for _ in range(3):
            assert (await http.post("/api/v1/sessions", headers=bearer(a_key))).status_code == 201
        limited = await http.post("/api/v1/sessions", headers=bearer(a_key))
        _code(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another user is not held back by ann, until the address (both on 127.0.0.1) is at its 5.
        assert (await http.post("/api/v1/sessions", headers=bearer(b_key))).status_code == 201
        assert (await http.post("/api/v1/sessions", headers=bearer(b_key))).status_code == 201
        _code(await http.post("/api/v1/sessions", headers=bearer(b_key)), 429, "RATE_LIMITED")
        # The window slides: a minute later both may create again.
        clock = strict.container.clock
        assert isinstance(clock, FakeClock)
        clock.advance(61)
        assert (await http.post("/api/v1/sessions", headers=bearer(a_key))).status_code == 201


async def test_one_user_cannot_hold_every_live_slot(strict: Served) -> None:
    from tests.e2e.harness import Client

    _a, a_key = await make_user(strict.container, "cat")
    _b, b_key = await make_user(strict.container, "dog")
    first = await create_session(strict.base, a_key)
    second = await create_session(strict.base, a_key)
    async with Client.connect(first["ws_url"]) as client:
        await client.until_type("session_state")
        # cat has a session connected: a second socket of theirs is refused, a new one too ...
        async with Client.connect(second["ws_url"]) as refused:
            error = await refused.until_type("error")
            assert error["code"] == "BUSY" and "live conversations" in error["message"]
        async with httpx.AsyncClient(base_url=strict.base) as http:
            _code(await http.post("/api/v1/sessions", headers=bearer(a_key)), 503, "USER_BUSY")
            # ... while dog still gets a slot.
            assert (await http.post("/api/v1/sessions", headers=bearer(b_key))).status_code == 201
    # Once cat's socket closed (the session parked for its reconnect grace), cat may connect again.
    async with Client.connect(second["ws_url"]) as client:
        assert (await client.until_type("session_state"))["session_id"] == second["session_id"]


async def test_avatar_up_makes_a_local_owner_even_when_only_plain_users_exist() -> None:
    # `avatar users create NAME` (or a benchmark) may run before the first `avatar up`: the local
    # owner is still made, and a plain user already called "owner" keeps its name and role.
    from avatar.application.accounts import AccountService
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.instant import InMemoryDatabase

    accounts = AccountService(InMemoryDatabase(), SystemClock())
    plain, _key = await accounts.create_user("owner")
    owner, created = await accounts.ensure_local_owner()
    assert created and owner.role is Role.ADMIN and owner.name.startswith("owner-")
    assert (await accounts.ensure_local_owner()) == (owner, False)
    assert (await accounts.get_user(plain.user_id)).role is Role.USER


async def test_avatar_up_keeps_one_api_key_for_the_local_owner(tmp_path: Path) -> None:
    # `avatar up` prints an API key for OpenAI clients (docs/openai.md): made once, kept in the
    # secrets folder (0600) and printed again on later starts; a kept key that no longer works for
    # the owner (another user's, or made up) is replaced, never reused.
    from avatar.application.accounts import AccountService
    from avatar.application.ports.storage import CredentialKind
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.instant import InMemoryDatabase
    from avatar.infrastructure.secrets import keep_local_api_key, read_local_api_key

    settings = Settings(data_dir=tmp_path)
    accounts = AccountService(InMemoryDatabase(), SystemClock())
    owner, _ = await accounts.ensure_local_owner()
    assert read_local_api_key(settings) is None
    key, new = await accounts.local_api_key(owner, read_local_api_key(settings))
    assert new
    path = keep_local_api_key(settings, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert await accounts.local_api_key(owner, read_local_api_key(settings)) == (key, False)
    caller = await accounts.authenticate(key, CredentialKind.API_KEY)
    assert caller is not None and caller.user == owner
    _other, other_key = await accounts.create_user("someone")
    for stale in (other_key, "made-up"):
        fresh, new = await accounts.local_api_key(owner, stale)
        assert new and fresh not in (key, stale)
