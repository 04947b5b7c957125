"""Finding F1 (docs/security.md): the signing key was a public constant and tokens were derivable.

Replayed as an outsider would: with the published default key and the session's public start
time, the old code let anyone compute a live session's token and take the conversation over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import websockets
from pydantic import SecretStr, ValidationError

from avatar.application.conversation import TokenError, issue_token, verify_token
from avatar.bench.live import auth
from avatar.infrastructure.secrets import SIGNING_FILE, resolve_signing_keys, rotate_signing_key
from avatar.settings import Settings
from tests.e2e.harness import Client, create_session, server_key
from tests.security.conftest import orchestrator, security_settings

PUBLISHED_DEFAULT = "change-me"


def _old_style_token(secret: str, session_id: str, expires_at: int) -> str:
    """How the old code built a token: HMAC(secret, "<id>.<expiry>"), nothing random."""
    digest = hmac.new(secret.encode(), f"{session_id}.{expires_at}".encode(), hashlib.sha256).digest()
    return f"{expires_at}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


async def _close_code(url: str) -> int:
    async with websockets.connect(url) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_a_token_recomputed_from_public_fields_is_refused(tmp_path: Path) -> None:
    settings = security_settings(tmp_path / "var")
    async with orchestrator(settings) as base:
        created = await create_session(base)
        sid = created["session_id"]
        async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as client:
            public = (await client.get(f"/api/v1/sessions/{sid}")).json()
        start = int(datetime.fromisoformat(public["start_time"]).timestamp())
        ttl = settings.security.session_token_ttl_s
        root = base.replace("http", "ws")
        # The attacker tries the published default key and the expiry implied by the start time
        # (a second either way, for rounding); with the real key too, in case it leaked, since a
        # token must never be a function of public fields alone.
        attempts = [
            _old_style_token(key, sid, start + ttl + skew)
            for key in (PUBLISHED_DEFAULT, settings.security.signing_keys()[0])
            for skew in (-1, 0, 1)
        ]
        for forged in attempts:
            assert await _close_code(f"{root}/ws/{sid}?token={forged}") == 4401
        # A token minted with the published key in the current format is refused as well.
        minted = issue_token(PUBLISHED_DEFAULT, uuid.UUID(sid), time.time(), ttl)
        assert await _close_code(f"{root}/ws/{sid}?token={minted}") == 4401
        # The owner's real token still works.
        async with Client.connect(created["ws_url"]) as owner:
            assert (await owner.until_type("session_state"))["resumed"] is False


def test_tokens_carry_randomness_and_never_repeat() -> None:
    sid = uuid.uuid4()
    first = issue_token("k" * 32, sid, 1000.0, 60)
    second = issue_token("k" * 32, sid, 1000.0, 60)
    assert first != second  # same session, same second: the old tokens were identical
    assert len(first.split(".")[1]) >= 22  # 128 random bits, base64url
    verify_token("k" * 32, sid, first, 1000.0)
    with pytest.raises(TokenError):
        verify_token("k" * 32, sid, first.replace(first.split(".")[1], "A" * 22), 1000.0)


def test_no_setting_holds_a_usable_default_signing_key() -> None:
    settings = Settings(_env_file=None)
    assert settings.security.secret_key is None
    with pytest.raises(ValidationError, match="published placeholder"):
        Settings(_env_file=None, security={"secret_key": PUBLISHED_DEFAULT})


def test_the_embedded_default_generates_a_private_key_once_and_keeps_it(tmp_path: Path) -> None:
    first = security_settings(tmp_path / "var")
    resolve_signing_keys(first)
    path = tmp_path / "var" / "secrets" / SIGNING_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    key = first.security.signing_keys()[0]
    assert len(key) >= 48 and key != PUBLISHED_DEFAULT
    again = security_settings(tmp_path / "var")  # the next start
    resolve_signing_keys(again)
    assert again.security.signing_keys()[0] == key
    other_install = security_settings(tmp_path / "elsewhere")
    resolve_signing_keys(other_install)
    assert other_install.security.signing_keys()[0] != key


@pytest.mark.parametrize("missing", ["secret_key", "master_key"])
def test_production_refuses_to_start_without_keys(missing: str) -> None:
    security = {"secret_key": "p" * 40, "master_key": base64.b64encode(bytes(32)).decode()}
    del security[missing]
    with pytest.raises(ValidationError, match=f"AVATAR_SECURITY__{missing.upper()}"):
        Settings(_env_file=None, environment="production", security=security)


def test_rotation_keeps_everyone_signed_in(tmp_path: Path) -> None:
    settings = security_settings(tmp_path / "var")
    resolve_signing_keys(settings)
    sid = uuid.uuid4()
    before = issue_token(settings.security.signing_keys(), sid, time.time(), 3600)
    rotate_signing_key(security_settings(tmp_path / "var"))
    restarted = security_settings(tmp_path / "var")
    resolve_signing_keys(restarted)
    keys = restarted.security.signing_keys()
    assert keys[0] != settings.security.signing_keys()[0]
    verify_token(keys, sid, before, time.time())  # the old token still works...
    after = issue_token(keys, sid, time.time(), 3600)
    with pytest.raises(TokenError):  # ...and new ones are signed with the new key
        verify_token(settings.security.signing_keys()[:1], sid, after, time.time())
    # After the grace period the retired key is dropped.
    later = security_settings(tmp_path / "var")
    resolve_signing_keys(later, now=time.time() + 8 * 24 * 3600)
    with pytest.raises(TokenError):
        verify_token(later.security.signing_keys(), sid, before, time.time())
    saved = json.loads((tmp_path / "var" / "secrets" / SIGNING_FILE).read_text())
    assert len(saved["previous"]) == 1


def test_a_configured_key_is_used_as_given(tmp_path: Path) -> None:
    settings = security_settings(tmp_path / "var", secret_key=SecretStr("configured-" + "x" * 30))
    resolve_signing_keys(settings)
    assert settings.security.signing_keys() == ["configured-" + "x" * 30]
    assert not (tmp_path / "var" / "secrets").exists()


@pytest.mark.parametrize(
    ("master_key", "message"),
    [("not base64 at all!", "must be base64"), (base64.b64encode(bytes(16)).decode(), "must be 32 bytes")],
)
def test_a_malformed_master_key_is_refused_with_the_reason(master_key: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, security={"master_key": master_key})


def test_damaged_key_files_say_what_to_do(tmp_path: Path) -> None:
    from avatar.infrastructure.crypto import DecryptionError
    from avatar.infrastructure.secrets import MASTER_FILE, SecretsError, load_keyring

    secrets_dir = tmp_path / "var" / "secrets"
    secrets_dir.mkdir(parents=True)
    (secrets_dir / SIGNING_FILE).write_text("{not json")
    with pytest.raises(SecretsError, match="delete it to make a new one"):
        resolve_signing_keys(security_settings(tmp_path / "var"))
    (secrets_dir / MASTER_FILE).write_text('{"version": 1}')
    with pytest.raises(DecryptionError, match="unreadable"):
        load_keyring(security_settings(tmp_path / "var"))
    (secrets_dir / MASTER_FILE).unlink()
    (secrets_dir / SIGNING_FILE).unlink()
    resolve_signing_keys(security_settings(tmp_path / "var"))
    (secrets_dir / SIGNING_FILE).chmod(0o644)  # loosened by hand: tightened again on the next read
    resolve_signing_keys(security_settings(tmp_path / "var"))
    assert stat.S_IMODE((secrets_dir / SIGNING_FILE).stat().st_mode) == 0o600
