"""Session tokens: an HMAC of the session id and an expiry, verifiable by any replica."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from avatar.domain.errors import AvatarError


class TokenError(AvatarError):
    """The token is missing, malformed, expired or belongs to another session."""

    code = "INVALID_TOKEN"


def _mac(secret: bytes, session_id: uuid.UUID, expires_at: int) -> str:
    digest = hmac.new(secret, f"{session_id}.{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(secret: str, session_id: uuid.UUID, now_s: float, ttl_s: int) -> str:
    """A token ``<expiry>.<mac>`` that proves the bearer created ``session_id``."""
    expires_at = int(now_s) + ttl_s
    return f"{expires_at}.{_mac(secret.encode(), session_id, expires_at)}"


def verify_token(secret: str, session_id: uuid.UUID, token: str | None, now_s: float) -> None:
    """Raise :class:`TokenError` with the reason unless ``token`` is valid for ``session_id``."""
    if not token:
        raise TokenError("a session token is required (?token=...)")
    expiry_text, _, mac = token.partition(".")
    if not expiry_text.isdigit() or not mac:
        raise TokenError("the session token is malformed")
    expected = _mac(secret.encode(), session_id, int(expiry_text))
    if not hmac.compare_digest(expected, mac):
        raise TokenError("the session token does not belong to this session")
    if int(expiry_text) < now_s:
        raise TokenError("the session token has expired: create a new session")
