"""Object keys in the audio bucket (docs/design-notes.md §5 layout), and the rule every key must follow.

``raw_inputs/YYYY/MM/DD/{session_id}_{turn_id}_{ts}.wav``, ``voice_profiles/{profile_id}/original.wav``
+ ``metadata.json``, ``synthesized/{fast|hq}/{turn_id}_{mode}_{ts}.wav``, ``backups/``. ``ts`` is the
UTC time in milliseconds since the epoch, so keys sort by time within a folder.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from avatar.domain.errors import DomainError
from avatar.domain.models import TTSMode

RAW_INPUTS = "raw_inputs/"
SYNTHESIZED = "synthesized/"
VOICE_PROFILES = "voice_profiles/"
BACKUPS = "backups/"

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
MAX_KEY_LENGTH = 512


def _ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise DomainError("object key timestamps must be timezone-aware")
    return int(ts.timestamp() * 1000)


def raw_input_key(session_id: uuid.UUID, turn_id: uuid.UUID, ts: datetime) -> str:
    """Where one user utterance's audio is kept (dated folder of the UTC day)."""
    day = ts.astimezone(UTC)
    return f"{RAW_INPUTS}{day:%Y/%m/%d}/{session_id}_{turn_id}_{_ms(ts)}.wav"


def synthesized_key(turn_id: uuid.UUID, mode: TTSMode | str, ts: datetime) -> str:
    """Where one reply's synthesized audio of tier ``mode`` is kept."""
    tier = TTSMode(mode).value
    return f"{SYNTHESIZED}{tier}/{turn_id}_{tier}_{_ms(ts)}.wav"


#: Extension of raw input audio once it is archived as Ogg/Opus (docs/security.md, "Retention").
ARCHIVED_SUFFIX = ".opus"
_KEY_TIME = re.compile(r"_(\d{10,16})\.[A-Za-z0-9]+$")


def key_in_url(url: str) -> str | None:
    """The object key inside a stored URL (``s3://bucket/key``, ``file:///root/key``)."""
    positions = [url.find(p) for p in (RAW_INPUTS, SYNTHESIZED, VOICE_PROFILES) if p in url]
    return url[min(positions) :] if positions else None


def key_time(key: str) -> datetime | None:
    """The UTC time in a raw-input or synthesized key (its ``_{ts}.ext`` tail), None if it has none."""
    match = _KEY_TIME.search(key)
    if match is None:
        return None
    return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)


def archived_key(key: str) -> str:
    """The key of a raw input's Ogg/Opus archive: the same key with ``.opus`` for its extension."""
    stem, dot, _ext = key.rpartition(".")
    if not dot or "/" in _ext:
        raise DomainError(f"object key without an extension: {key!r}")
    return validate_key(stem + ARCHIVED_SUFFIX)


def voice_profile_prefix(profile_id: uuid.UUID) -> str:
    return f"{VOICE_PROFILES}{profile_id}/"


def voice_profile_key(profile_id: uuid.UUID, name: str = "original.wav") -> str:
    """A file of one voice profile: ``original.wav`` (the sample) or ``metadata.json``."""
    return validate_key(f"{voice_profile_prefix(profile_id)}{name}")


def backup_key(name: str) -> str:
    return validate_key(f"{BACKUPS}{name}")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``DomainError``.

    Safe: ASCII letters, digits, ``._-/``; no empty, ``.`` or ``..`` segment; no leading slash.
    The filesystem store relies on this to keep every key inside its root directory.
    """
    if not key or len(key) > MAX_KEY_LENGTH or not _SAFE_KEY.match(key):
        raise DomainError(f"invalid object key: {key!r}")
    if any(part in ("", ".", "..") for part in key.rstrip("/").split("/")):
        raise DomainError(f"invalid object key: {key!r}")
    return key
