"""Object stores for audio (the ``ObjectStore`` port): a directory when embedded, S3/MinIO in compose.

Both keep every blocking call (disk or HTTP) off the event loop and bound how many run at once.
:func:`build_object_store` wraps either in :class:`EncryptingObjectStore`: every object is sealed
with AES-256-GCM under its own data key (:mod:`avatar.infrastructure.crypto`, docs/security.md), so
neither the disk nor the bucket ever holds playable audio. Downloads therefore go through the app:
presigned URLs are ``/api/v1/objects/{key}?expires=..&sig=..`` signed with an HMAC of the server's
signing key (valid one hour by default, docs/design-notes.md §5, §8), served and decrypted by
:mod:`avatar.presentation.objects`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.storage import StoredObject
from avatar.domain.errors import DependencyError, InvalidInputError, NotFoundError
from avatar.domain.storage_keys import validate_key
from avatar.infrastructure.crypto import DecryptionError, Envelope, Keyring
from avatar.infrastructure.retry import RetryPolicy, call_with_retries
from avatar.settings import ObjectStoreSettings, Settings, default_of

log = logging.getLogger(__name__)

T = TypeVar("T")

OBJECTS_ROUTE = "/api/v1/objects/"
MAX_EXPIRY = timedelta(days=7)
_TMP_SUFFIX = ".partial"


def _check_prefix(prefix: str) -> str:
    if prefix:
        validate_key(prefix)
    return prefix


def _expiry_seconds(expires: timedelta) -> int:
    seconds = int(expires.total_seconds())
    if seconds <= 0 or expires > MAX_EXPIRY:
        raise InvalidInputError(f"presigned URL lifetime must be within 1 s and {MAX_EXPIRY}")
    return seconds


class UrlSigner:
    """HMAC-SHA256 signatures for ``(key, expires)`` pairs (expires = Unix seconds).

    Signs with ``secret``; also accepts signatures made with ``previous`` keys (a rotation's grace).
    """

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        if not secret or not all(previous):
            raise ValueError("a signing secret is required")
        self._secret = secret
        self._accepted = [secret, *previous]

    @staticmethod
    def _sign(secret: bytes, key: str, expires: int) -> str:
        return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, key: str, expires: int) -> str:
        return self._sign(self._secret, key, expires)

    def url(self, base_url: str, key: str, expires: timedelta) -> str:
        """``{base_url}/api/v1/objects/{key}?expires=..&sig=..`` valid for ``expires``."""
        validate_key(key)
        deadline = int(time.time()) + _expiry_seconds(expires)
        return f"{base_url}{OBJECTS_ROUTE}{quote(key)}?expires={deadline}&sig={self.sign(key, deadline)}"

    def verify(self, key: str, expires: int, signature: str, now: float | None = None) -> None:
        """Raise ``InvalidInputError`` (code ``URL_EXPIRED`` or ``BAD_SIGNATURE``) unless valid."""
        if not any(hmac.compare_digest(self._sign(k, key, expires), signature) for k in self._accepted):
            raise InvalidInputError("the object URL signature is invalid", code="BAD_SIGNATURE")
        if expires < (time.time() if now is None else now):
            raise InvalidInputError("the object URL has expired; ask for a new one", code="URL_EXPIRED")


class FilesystemObjectStore:
    """Objects as files under ``root`` (the embedded placement)."""

    def __init__(
        self, root: Path, signer: UrlSigner, *, base_url: str = "", max_concurrency: int = 8
    ) -> None:
        self.root = root.resolve()
        self.signer = signer
        self._base_url = base_url.rstrip("/")
        self._limit = asyncio.Semaphore(max_concurrency)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._limit:
            try:
                return await asyncio.to_thread(fn, *args)
            except (NotFoundError, InvalidInputError):
                raise
            except OSError as exc:
                log.error("object store I/O failed: %s", exc)
                raise DependencyError(f"object store I/O failed: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        await self._run(self._write, path, data)
        return path.as_uri()

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # Write to a temporary file and rename, so a reader never sees half an object.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def get(self, key: str) -> bytes:
        return await self._run(self._read, self._path(key), key)

    @staticmethod
    def _read(path: Path, key: str) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(f"object not found: {key}") from exc

    async def exists(self, key: str) -> bool:
        return await self._run(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        await self._run(self._unlink, self._path(key))

    def _unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root and parent.is_dir():
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break
            parent = parent.parent

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidInputError("refusing to delete every object: give a prefix")
        keys = await self.list_keys(prefix)
        for key in keys:
            await self._run(self._unlink, self._path(key))
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._run(self._list, _check_prefix(prefix))

    async def list_objects(self, prefix: str) -> list[StoredObject]:
        return await self._run(self._list_sized, _check_prefix(prefix))

    def _list_sized(self, prefix: str) -> list[StoredObject]:
        out = []
        for key in self._list(prefix):
            with contextlib.suppress(FileNotFoundError):  # removed since the listing
                out.append(StoredObject(key, (self.root / key).stat().st_size))
        return out

    def _list(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names, then filter by the full prefix.
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        keys = []
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.endswith(_TMP_SUFFIX):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.signer.url(self._base_url, key, expires)

    def verify_signature(self, key: str, expires: int, signature: str) -> None:
        """Check a presigned URL's parts (used by ``GET /api/v1/objects/{key}``)."""
        validate_key(key)
        self.signer.verify(key, expires, signature)

    async def health(self) -> ComponentHealth:
        ok = self.root.is_dir() and os.access(self.root, os.W_OK)
        return ComponentHealth(
            name="object_store",
            ok=ok,
            detail="ok" if ok else f"{self.root} is not writable",
            extra={"kind": "filesystem"},
        )


_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


def _is_missing(exc: BaseException) -> bool:
    """A 404 for the object. Some S3 servers answer it with ``text/xml``, which the SDK does not parse."""
    from minio.error import InvalidResponseError, S3Error

    if isinstance(exc, S3Error):
        return exc.code in _MISSING_CODES
    return isinstance(exc, InvalidResponseError) and "Response code: 404" in str(exc)


class S3ObjectStore:
    """Objects in one S3 bucket through the ``minio`` SDK (MinIO in compose; any S3 API works).

    Transient failures (connection errors, 5xx, throttling) are retried with backoff, then raised
    as ``DependencyError``.
    """

    _TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        retries: int = 3,
        base_delay_s: float = 0.1,
        max_concurrency: int = 8,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._policy = RetryPolicy(retries=retries, base_delay_s=base_delay_s)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._http: Any = None

    def close(self) -> None:
        """Close the pooled HTTP connections (when this store created them)."""
        if self._http is not None:
            self._http.clear()

    @classmethod
    def connect(
        cls,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = default_of(ObjectStoreSettings, "region"),
        retries: int = 3,
        base_delay_s: float = 0.1,
        timeout_s: float = 10.0,
    ) -> S3ObjectStore:
        import urllib3
        from minio import Minio

        # urllib3's own retries are turned off so that this class decides (and logs) every retry.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(3.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(total=0, redirect=0),
            maxsize=16,
        )
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        store = cls(client, bucket, retries=retries, base_delay_s=base_delay_s)
        store._http = http
        return store

    def _transient(self, exc: BaseException) -> bool:
        import urllib3
        from minio.error import S3Error, ServerError

        if isinstance(exc, S3Error):
            return exc.code in self._TRANSIENT_CODES
        if isinstance(exc, ServerError):
            return True
        return isinstance(exc, OSError | urllib3.exceptions.HTTPError)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def once() -> T:
            async with self._limit:
                return await asyncio.to_thread(fn, *args, **kwargs)

        return await call_with_retries(
            once,
            policy=self._policy,
            is_transient=self._transient,
            what=what,
            dependency="object store",
            log=log,
        )

    async def ensure_bucket(self) -> None:
        if await self._call("bucket check", self._client.bucket_exists, self.bucket):
            return
        from minio.error import S3Error

        try:
            await self._call("bucket creation", self._client.make_bucket, self.bucket)
        except S3Error as exc:  # another replica created it first
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        log.info("created bucket %s", self.bucket)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        validate_key(key)
        # A fresh stream per attempt: a retried upload must start from the first byte.
        await self._call(
            "put",
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
        )
        return f"s3://{self.bucket}/{key}"

    async def get(self, key: str) -> bytes:
        validate_key(key)

        def read() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        try:
            return await self._call("get", read)
        except DependencyError:
            raise
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"object not found: {key}") from exc
            raise DependencyError(f"object store get failed: {exc}") from exc

    async def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            await self._call("stat", self._client.stat_object, self.bucket, key)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            await self._call("delete", self._client.remove_object, self.bucket, key)
        except Exception as exc:
            if not _is_missing(exc):
                raise

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidInputError("refusing to delete every object: give a prefix")
        keys = await self.list_keys(prefix)
        for key in keys:
            await self.delete(key)
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        _check_prefix(prefix)

        def listing() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return sorted(str(obj.object_name) for obj in objects if not obj.is_dir)

        return await self._call("list", listing)

    async def list_objects(self, prefix: str) -> list[StoredObject]:
        _check_prefix(prefix)

        def listing() -> list[StoredObject]:
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            found = [StoredObject(str(o.object_name), int(o.size or 0)) for o in objects if not o.is_dir]
            return sorted(found, key=lambda o: o.key)

        return await self._call("list", listing)

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        validate_key(key)
        _expiry_seconds(expires)
        url = await self._call(
            "presign", self._client.presigned_get_object, self.bucket, key, expires=expires
        )
        return str(url)

    async def health(self) -> ComponentHealth:
        extra: dict[str, object] = {"kind": "s3", "bucket": self.bucket}
        try:
            async with asyncio.timeout(5.0):
                ok = bool(await asyncio.to_thread(self._client.bucket_exists, self.bucket))
        except Exception as exc:  # health reports, never raises
            return ComponentHealth(
                name="object_store", ok=False, detail=f"{type(exc).__name__}: {exc}", extra=extra
            )
        return ComponentHealth(
            name="object_store", ok=ok, detail="ok" if ok else "bucket missing", extra=extra
        )


class EncryptingObjectStore:
    """Seals every object before it reaches the inner store and opens it on the way back.

    The object's key is bound into the seal (associated data), so ciphertext copied to another key
    does not open. Objects written before encryption existed (no ``AVE1`` header) are still read as
    they are; ``avatar keys rotate`` seals them. Presigned URLs point at the app's download route,
    which decrypts (the bucket only ever holds ciphertext).
    """

    def __init__(
        self,
        inner: FilesystemObjectStore | S3ObjectStore,
        envelope: Envelope,
        signer: UrlSigner,
        *,
        base_url: str = "",
    ) -> None:
        self.inner = inner
        self.envelope = envelope
        self.signer = signer
        self._base_url = base_url.rstrip("/")

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        validate_key(key)
        sealed = await asyncio.to_thread(self.envelope.seal, data, key.encode())
        return await self.inner.put(key, sealed, "application/octet-stream")

    async def get(self, key: str) -> bytes:
        blob = await self.inner.get(key)
        if not Envelope.is_sealed(blob):
            return blob
        return await asyncio.to_thread(self.envelope.open, blob, key.encode())

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.inner.delete_prefix(prefix)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.inner.list_keys(prefix)

    async def list_objects(self, prefix: str) -> list[StoredObject]:
        return await self.inner.list_objects(prefix)

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.signer.url(self._base_url, key, expires)

    def verify_signature(self, key: str, expires: int, signature: str) -> None:
        """Check a presigned URL's parts (used by ``GET /api/v1/objects/{key}``)."""
        validate_key(key)
        self.signer.verify(key, expires, signature)

    async def health(self) -> ComponentHealth:
        health = await self.inner.health()
        health.extra["encrypted"] = True
        health.extra["master_key_id"] = self.envelope.keyring.active_id
        return health

    async def rewrap_all(self, prefix: str = "") -> RewrapReport:
        """Re-wrap every object's data key under the active master key; seal plaintext objects.

        Idempotent and resumable: objects already under the active key are left untouched.
        """
        report = RewrapReport()
        for key in await self.inner.list_keys(prefix):
            blob = await self.inner.get(key)
            if Envelope.is_sealed(blob):
                try:
                    new = await asyncio.to_thread(self.envelope.rewrap, blob)
                except DecryptionError as exc:
                    report.failed.append(f"{key}: {exc.message}")
                    continue
                if new is None:
                    report.unchanged += 1
                    continue
                report.rewrapped += 1
            else:
                new = await asyncio.to_thread(self.envelope.seal, blob, key.encode())
                report.sealed += 1
            await self.inner.put(key, new, "application/octet-stream")
        return report


@dataclass
class RewrapReport:
    """What a key rotation did to the stored objects (or rows)."""

    rewrapped: int = 0
    sealed: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)


async def build_object_store(
    settings: Settings, stack: contextlib.AsyncExitStack, keyring: Keyring | None = None
) -> EncryptingObjectStore:
    """The store ``settings.object_store.kind`` asks for, ready to use (root or bucket created).

    Wrapped in :class:`EncryptingObjectStore` with ``keyring`` (resolved from the settings when
    omitted). Presigned URLs are relative (``/api/v1/objects/...``) unless
    ``settings.server.public_url`` is set, so they work behind any proxy in front of the app.
    """
    from avatar.infrastructure.secrets import load_keyring, resolve_signing_keys

    resolve_signing_keys(settings)
    keys = [k.encode() for k in settings.security.signing_keys()]
    signer = UrlSigner(keys[0], keys[1:])
    base_url = settings.server.public_url or ""
    envelope = Envelope(keyring or load_keyring(settings))
    cfg = settings.object_store
    inner: FilesystemObjectStore | S3ObjectStore
    if cfg.kind == "s3":
        s3 = S3ObjectStore.connect(
            cfg.endpoint,
            cfg.access_key.get_secret_value(),
            cfg.secret_key.get_secret_value(),
            cfg.bucket,
            secure=cfg.secure,
            region=cfg.region,
        )
        stack.callback(s3.close)
        await s3.ensure_bucket()
        inner = s3
    else:
        root = cfg.root
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        inner = FilesystemObjectStore(root, signer, base_url=base_url)
    return EncryptingObjectStore(inner, envelope, signer, base_url=base_url)
