"""Where the signing key and the master keys come from (docs/security.md, "Keys").

* Configured (``AVATAR_SECURITY__SECRET_KEY``, ``AVATAR_SECURITY__MASTER_KEY``): used as given.
  Production refuses to start without them (``Settings`` validation).
* Unset in development/test (the embedded default): generated once with the OS random generator
  and kept in ``<data_dir>/secrets/`` (folder 0700, files 0600), reused on every later start.

A signing-key rotation (``avatar keys rotate --signing``) moves the current key into the file's
``previous`` list with the time it was retired; it keeps verifying until everything it signed has
expired (the token lifetime, or the longest presigned URL), then it is dropped.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from pydantic import SecretStr

from avatar.infrastructure.crypto import Keyring, read_private, write_private
from avatar.settings import Environment, Settings

log = logging.getLogger(__name__)

SIGNING_FILE = "signing_keys.json"
MASTER_FILE = "master_keys.json"
#: The longest a presigned object URL lives (infrastructure/object_store.py MAX_EXPIRY).
_MAX_URL_LIFETIME = timedelta(days=7)


class SecretsError(RuntimeError):
    """The keys cannot be resolved; the message says what to set."""


def secrets_dir(settings: Settings) -> Path:
    return settings.data_dir / "secrets"


def _grace_s(settings: Settings) -> float:
    return max(settings.security.session_token_ttl_s, _MAX_URL_LIFETIME.total_seconds())


def _new_signing_key() -> str:
    return secrets.token_urlsafe(48)


def _load_signing_file(path: Path) -> dict[str, object]:
    if not path.exists():
        content = json.dumps({"version": 1, "current": _new_signing_key(), "previous": []}, indent=2) + "\n"
        if write_private(path, content, exclusive=True):
            log.info("generated a new signing key in %s", path)
    try:
        raw = json.loads(read_private(path))
        if not isinstance(raw, dict) or not isinstance(raw.get("current"), str) or not raw["current"]:
            raise ValueError("no current key")
    except ValueError as exc:
        raise SecretsError(
            f"the signing key file {path} is unreadable ({exc}); delete it to make a new one"
        ) from exc
    return raw


def resolve_signing_keys(settings: Settings, *, now: float | None = None) -> None:
    """Make ``settings.security.secret_key`` (and retired keys still in grace) available.

    Idempotent: a configured or already-resolved key is left alone.
    """
    security = settings.security
    if security.secret_key is not None:
        return
    if settings.environment is Environment.PRODUCTION:
        raise SecretsError("production needs AVATAR_SECURITY__SECRET_KEY (see docs/security.md)")
    raw = _load_signing_file(secrets_dir(settings) / SIGNING_FILE)
    now = time.time() if now is None else now
    previous = [
        SecretStr(str(p["key"]))
        for p in raw.get("previous", []) or []  # type: ignore[attr-defined]
        if isinstance(p, dict) and now - float(p.get("retired_at", 0)) < _grace_s(settings)
    ]
    security.secret_key = SecretStr(str(raw["current"]))
    security.previous_secret_keys = [*security.previous_secret_keys, *previous]


def rotate_signing_key(settings: Settings, *, now: float | None = None) -> Path:
    """Make a new signing key current in the data directory; the old one stays valid for the grace."""
    if settings.security.secret_key is not None:
        raise SecretsError(
            "the signing key comes from the settings: set AVATAR_SECURITY__SECRET_KEY to a new value and "
            "put the old one in AVATAR_SECURITY__PREVIOUS_SECRET_KEYS until its tokens expire"
        )
    path = secrets_dir(settings) / SIGNING_FILE
    raw = _load_signing_file(path)
    now = time.time() if now is None else now
    kept = [
        p
        for p in raw.get("previous", []) or []  # type: ignore[attr-defined]
        if isinstance(p, dict) and now - float(p.get("retired_at", 0)) < _grace_s(settings)
    ]
    kept.append({"key": raw["current"], "retired_at": now})
    content = {"version": 1, "current": _new_signing_key(), "previous": kept}
    write_private(path, json.dumps(content, indent=2) + "\n", exclusive=False)
    return path


def service_key(settings: Settings) -> str | None:
    """The model services' shared key (docs/security.md, "Service keys"); ``None`` in development
    when unset. Production refuses to start without one, on both sides."""
    key = settings.security.service_key
    if key is not None and key.get_secret_value():
        return key.get_secret_value()
    if settings.environment is Environment.PRODUCTION:
        raise SecretsError("production needs AVATAR_SECURITY__SERVICE_KEY (see docs/security.md)")
    return None


def service_headers(settings: Settings) -> dict[str, str]:
    """What a client of the model services sends (nothing without a key)."""
    from avatar_common.service_auth import bearer_header

    key = service_key(settings)
    return bearer_header(key) if key else {}


#: The error code of a service that refused the key (a deployment mistake, not the caller's input).
SERVICE_KEY_REFUSED = "SERVICE_KEY_REFUSED"


def key_refused_message(service: str) -> str:
    return (
        f"the {service} service refused the service key: set the same AVATAR_SECURITY__SERVICE_KEY "
        "on the orchestrator and the service (docs/security.md)"
    )


def guard_service(app: FastAPI, settings: Settings) -> FastAPI:
    """A model service's app behind the shared key (unchanged without one)."""
    from avatar_common.service_auth import ServiceKeyGuard

    key = service_key(settings)
    if key:
        app.add_middleware(ServiceKeyGuard, key=key)
    return app


def load_keyring(settings: Settings) -> Keyring:
    """The master keys: the configured ones, or the data directory's keyring (created if absent)."""
    configured = settings.security.master_keys()
    if configured:
        return Keyring.from_keys(configured)
    if settings.environment is Environment.PRODUCTION:
        raise SecretsError("production needs AVATAR_SECURITY__MASTER_KEY (see docs/security.md)")
    return Keyring.load_file(secrets_dir(settings) / MASTER_FILE, create=True)


LIVE_KEYS_FILE = "live_keys.json"
#: The local owner's API key that ``avatar up`` prints for OpenAI clients (docs/openai.md).
LOCAL_API_KEY_FILE = "local_api_key"


def read_local_api_key(settings: Settings) -> str | None:
    """The API key kept by an earlier ``avatar up`` (``None``: none kept yet)."""
    path = secrets_dir(settings) / LOCAL_API_KEY_FILE
    if not path.exists():
        return None
    return read_private(path).strip() or None


def keep_local_api_key(settings: Settings, key: str) -> Path:
    """Keep the local owner's API key (0600) so the next ``avatar up`` prints the same one."""
    path = secrets_dir(settings) / LOCAL_API_KEY_FILE
    write_private(path, key + "\n", exclusive=False)
    return path


def live_keys(settings: Settings) -> tuple[str, str]:
    """The live mode's ``(read key, operator key)`` (docs/live.md, "Keys").

    The read key goes into the ``/overlay`` and ``/stage`` URLs that OBS opens (it shows, never
    changes); the operator key changes the overlay and the stage. Both are generated once with the
    OS random generator into ``<data_dir>/secrets/live_keys.json`` (0600) and reused; delete the
    file to get new ones.
    """
    path = secrets_dir(settings) / LIVE_KEYS_FILE
    if not path.exists():
        content = {"version": 1, "read": secrets.token_urlsafe(24), "operator": secrets.token_urlsafe(32)}
        if write_private(path, json.dumps(content, indent=2) + "\n", exclusive=True):
            log.info("generated the live overlay and operator keys in %s", path)
    try:
        raw = json.loads(read_private(path))
        read, operator = raw["read"], raw["operator"]
        if not (
            isinstance(read, str) and isinstance(operator, str) and read and operator and read != operator
        ):
            raise ValueError("keys missing or equal")
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretsError(
            f"the live key file {path} is unreadable ({exc}); delete it to make new keys"
        ) from exc
    return read, operator
