"""Envelope encryption at rest (AES-256-GCM, the ``cryptography`` library), docs/security.md.

Every stored value gets its own random 256-bit data key (DEK). The data is sealed with the DEK and
the DEK is wrapped with a master key; the wrapped DEK and the master key's id travel in the value's
header, so a master-key rotation only re-wraps headers (``avatar keys rotate``) and never needs the
data re-encrypted.

Binary layout of a sealed value::

    b"AVE1" | len(kid): 1 byte | kid (ascii) | wrapped DEK: 12-byte nonce + 32 + 16-byte tag
            | 12-byte nonce | ciphertext + 16-byte tag

The DEK is wrapped with the header's magic and key id as associated data; the body is sealed with
the magic and a caller-chosen context (the object key, or ``table.column`` for text) as associated
data, so a value cannot be moved to another object or column undetected.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from avatar.domain.errors import DependencyError

log = logging.getLogger(__name__)

MAGIC = b"AVE1"
TEXT_PREFIX = "enc1:"
KEY_BYTES = 32
NONCE_BYTES = 12
_WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + 16


class DecryptionError(DependencyError):
    """A sealed value cannot be opened: unknown master key, or the bytes were altered."""

    code = "DECRYPTION_FAILED"


def key_id(key: bytes) -> str:
    """A short public id of a master key (not reversible to the key)."""
    return hashlib.sha256(b"avatar-master-key-id|" + key).hexdigest()[:16]


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_private(path: Path, data: str, *, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` with mode 0600 (folder 0700), atomically.

    With ``exclusive`` the file is only created if absent (another process may race us to it);
    returns False when it already existed.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = ""
        return True
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_private(path: Path) -> str:
    """Read a key file, tightening its mode to 0600 if someone loosened it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); setting it to 0600", path, mode)
        os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8")


class Keyring:
    """Master keys by id; one is active (used to wrap new data keys).

    A keyring kept in a file (the embedded default) is re-read when the file changes or a value
    names a key it does not know, so a running server picks up a rotation made by
    ``avatar keys rotate`` in another process (new values are then sealed under the new key).
    """

    def __init__(self, keys: dict[str, bytes], active: str, source: Path | None = None) -> None:
        if active not in keys:
            raise ValueError("the active master key is not in the keyring")
        for kid, key in keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"master key {kid} is not {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self._active = active
        self.source = source
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> int:
        if self.source is None:
            return 0
        try:
            return self.source.stat().st_mtime_ns
        except OSError:
            return 0

    @classmethod
    def from_keys(cls, keys: Iterable[bytes]) -> Keyring:
        """Configured keys, the first one active."""
        listed = list(keys)
        if not listed:
            raise ValueError("at least one master key is required")
        return cls({key_id(k): k for k in listed}, key_id(listed[0]))

    @classmethod
    def load_file(cls, path: Path, *, create: bool) -> Keyring:
        """The keyring in ``path``; with ``create``, a new one with a random key if absent."""
        if not path.exists():
            if not create:
                raise DecryptionError(f"no master keyring at {path}")
            key = generate_key()
            if write_private(path, cls._dump({key_id(key): key}, key_id(key)), exclusive=True):
                log.info("generated a new master key %s in %s", key_id(key), path)
        keys, active = cls._parse(read_private(path), path)
        return cls(keys, active, source=path)

    @staticmethod
    def _dump(keys: dict[str, bytes], active: str) -> str:
        encoded = {kid: base64.b64encode(k).decode() for kid, k in keys.items()}
        return json.dumps({"version": 1, "active": active, "keys": encoded}, indent=2) + "\n"

    @staticmethod
    def _parse(text: str, path: Path) -> tuple[dict[str, bytes], str]:
        try:
            raw = json.loads(text)
            keys = {str(kid): base64.b64decode(v) for kid, v in raw["keys"].items()}
            active = str(raw["active"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecryptionError(f"the master keyring {path} is unreadable: {exc}") from exc
        return keys, active

    @property
    def active_id(self) -> str:
        return self._active

    def ids(self) -> list[str]:
        return list(self._keys)

    def active_key(self) -> tuple[str, bytes]:
        if self.source is not None and self._file_stamp() != self._stamp:
            self.reload()
        return self._active, self._keys[self._active]

    def get(self, kid: str) -> bytes:
        key = self._keys.get(kid)
        if key is None and self.source is not None:
            self.reload()
            key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(
                f"data was encrypted with master key {kid}, which is not in the keyring; put it back "
                "in AVATAR_SECURITY__PREVIOUS_MASTER_KEYS (or the keyring file) to read it"
            )
        return key

    def reload(self) -> None:
        if self.source is None:
            return
        with self._lock:
            stamp = self._file_stamp()
            keys, active = self._parse(read_private(self.source), self.source)
            self._keys, self._active, self._stamp = keys, active, stamp

    def rotate_file(self) -> str:
        """Add a new random key to a file keyring and make it active; returns its id."""
        if self.source is None:
            raise ValueError(
                "the master keys come from the settings: set AVATAR_SECURITY__MASTER_KEY to a new key "
                "and move the old one to AVATAR_SECURITY__PREVIOUS_MASTER_KEYS, then run `avatar keys rotate`"
            )
        with self._lock:
            keys, _ = self._parse(read_private(self.source), self.source)
            key = generate_key()
            kid = key_id(key)
            keys[kid] = key
            write_private(self.source, self._dump(keys, kid), exclusive=False)
            self._keys, self._active, self._stamp = keys, kid, self._file_stamp()
        return kid


class Envelope:
    """Seal and open values with per-value data keys wrapped by the keyring's master keys."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @staticmethod
    def is_sealed(blob: bytes) -> bool:
        return blob[:4] == MAGIC

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        kid, master = self.keyring.active_key()
        dek = generate_key()
        header = self._header(kid, master, dek)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + AESGCM(dek).encrypt(nonce, plaintext, MAGIC + context)

    @staticmethod
    def _header(kid: str, master: bytes, dek: bytes) -> bytes:
        kid_bytes = kid.encode("ascii")
        wrap_nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = wrap_nonce + AESGCM(master).encrypt(wrap_nonce, dek, MAGIC + kid_bytes)
        return MAGIC + bytes([len(kid_bytes)]) + kid_bytes + wrapped

    @staticmethod
    def _split(blob: bytes) -> tuple[str, bytes, bytes]:
        """(key id, wrapped DEK, body) of a sealed value."""
        if not Envelope.is_sealed(blob) or len(blob) < 5:
            raise DecryptionError("the value is not sealed (no AVE1 header)")
        kid_len = blob[4]
        start = 5 + kid_len
        if len(blob) < start + _WRAPPED_BYTES + NONCE_BYTES + 16:
            raise DecryptionError("the sealed value is truncated")
        kid = blob[5:start].decode("ascii", errors="replace")
        return kid, blob[start : start + _WRAPPED_BYTES], blob[start + _WRAPPED_BYTES :]

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The id of the master key that wraps a sealed value's data key."""
        return Envelope._split(blob)[0]

    def _unwrap(self, kid: str, wrapped: bytes) -> bytes:
        master = self.keyring.get(kid)
        try:
            return AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], MAGIC + kid.encode())
        except InvalidTag as exc:
            raise DecryptionError(
                f"the data key wrapped by master key {kid} fails its integrity check"
            ) from exc

    def open(self, blob: bytes, context: bytes) -> bytes:
        kid, wrapped, body = self._split(blob)
        dek = self._unwrap(kid, wrapped)
        try:
            return AESGCM(dek).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], MAGIC + context)
        except InvalidTag as exc:
            raise DecryptionError(
                "the sealed value was altered or belongs elsewhere (integrity check failed)"
            ) from exc

    def rewrap(self, blob: bytes) -> bytes | None:
        """The same value with its data key wrapped by the active master key; None if it already is."""
        kid, wrapped, body = self._split(blob)
        active, master = self.keyring.active_key()
        if kid == active:
            return None
        return self._header(active, master, self._unwrap(kid, wrapped)) + body

    # --- text columns ------------------------------------------------------------------------

    def seal_text(self, text: str, context: str) -> str:
        return TEXT_PREFIX + base64.b64encode(self.seal(text.encode("utf-8"), context.encode())).decode(
            "ascii"
        )

    @staticmethod
    def is_sealed_text(value: str) -> bool:
        return value.startswith(TEXT_PREFIX)

    def open_text(self, value: str, context: str) -> str:
        if not self.is_sealed_text(value):
            return value  # written before encryption was enabled; `avatar keys rotate` seals it
        try:
            blob = base64.b64decode(value[len(TEXT_PREFIX) :], validate=True)
        except ValueError as exc:
            raise DecryptionError("a sealed text value is not valid base64") from exc
        return self.open(blob, context.encode()).decode("utf-8")

    def rewrap_text(self, value: str, context: str) -> str | None:
        """Re-wrap a sealed text value (or seal a plaintext one); None when nothing changes."""
        if not self.is_sealed_text(value):
            return self.seal_text(value, context)
        blob = base64.b64decode(value[len(TEXT_PREFIX) :], validate=True)
        new = self.rewrap(blob)
        return None if new is None else TEXT_PREFIX + base64.b64encode(new).decode("ascii")
