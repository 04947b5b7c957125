"""Session tokens: an HMAC over the session id, an expiry and a random nonce, verifiable by any replica.

A token is ``<expiry>.<nonce>.<mac>``. The nonce (128 random bits) makes every token unique and
impossible to recompute from public fields such as the session's start time (docs/security.md,
finding F1). Verification accepts any of several keys, so a signing-key rotation does not log
anybody out: the retired key keeps verifying until the tokens it signed expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence

from avatar.domain.errors import AvatarError

NONCE_BYTES = 16


class TokenError(AvatarError):
    """The token is missing, malformed, expired or belongs to another session."""

    code = "INVALID_TOKEN"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _mac(secret: bytes, session_id: uuid.UUID, expires_at: int, nonce: str) -> str:
    message = f"avatar-session-v2|{session_id}|{expires_at}|{nonce}".encode()
    return _b64(hmac.new(secret, message, hashlib.sha256).digest())


def _keys(secret: str | Sequence[str]) -> list[bytes]:
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys or not all(keys):
        raise ValueError("a signing key is required")
    return [k.encode() for k in keys]


def issue_token(secret: str | Sequence[str], session_id: uuid.UUID, now_s: float, ttl_s: int) -> str:
    """A fresh token that proves the bearer created ``session_id``; signed with the first key."""
    expires_at = int(now_s) + ttl_s
    nonce = _b64(secrets.token_bytes(NONCE_BYTES))
    return f"{expires_at}.{nonce}.{_mac(_keys(secret)[0], session_id, expires_at, nonce)}"


def verify_token(secret: str | Sequence[str], session_id: uuid.UUID, token: str | None, now_s: float) -> None:
    """Raise :class:`TokenError` with the reason unless ``token`` is valid for ``session_id``.

    ``secret`` is one key or the accepted keys (current first, then retired ones).
    """
    if not token:
        raise TokenError("a session token is required (see docs/protocol.md, Authentication)")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1] or not parts[2]:
        raise TokenError("the session token is malformed")
    expiry_text, nonce, mac = parts
    expires_at = int(expiry_text)
    if not any(hmac.compare_digest(_mac(key, session_id, expires_at, nonce), mac) for key in _keys(secret)):
        raise TokenError("the session token does not belong to this session")
    if expires_at < now_s:
        raise TokenError("the session token has expired: create a new session")
