"""Packaged model files: locate them in their wheels, join split parts, verify sha256.

``models/manifest.json`` lists every artifact the embedded default uses. An artifact is either
*located* (a file used where its package installed it, or, in a production manifest, at a path
relative to that manifest) or *joined* (parts concatenated into the cache directory, e.g. Whisper
base's two halves). Both are verified against the manifest's sha256: by ``avatar models prepare``,
and again whenever a model is looked up to be loaded (``verify_on_load``), so a file swapped or
corrupted after preparation refuses to load (docs/security.md). Load-time verification is cached
by file identity (size, mtime, ctime, inode), so an unchanged file is hashed once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

Progress = Callable[[str, int, int], None]
_CHUNK = 4 * 1024 * 1024


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message says how to fix it."""


class ModelIntegrityError(ModelError):
    """A model file does not match its manifest's size or sha256: it is refused, never loaded."""


VERIFIED_CACHE = "verified.json"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a file comes from: ``path`` inside an installed ``package``, or relative to ``base``."""

    package: str
    path: str
    base: Path | None = None

    def resolve(self) -> Path:
        if not self.package:
            if self.base is None:
                raise ModelError(f"source {self.path!r} names neither a package nor a base directory")
            return (self.base / self.path).resolve()
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"package {self.package!r} is not installed; run `make setup` (scripts/setup.sh)"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.path


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of an artifact: where it comes from and what it must hash to."""

    name: str
    sources: tuple[Source, ...]
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    role: str
    kind: str  # "locate" or "join"
    files: tuple[FileSpec, ...]
    license: str = ""

    def is_joined(self) -> bool:
        return self.kind == "join"


@dataclass(frozen=True, slots=True)
class Manifest:
    artifacts: tuple[Artifact, ...]
    cache_dir: Path
    #: Check a file's sha256 when :meth:`path` / :meth:`artifact_dir` hand it out to be loaded.
    verify_on_load: bool = False

    @classmethod
    def load(
        cls,
        manifest: Path,
        cache_dir: Path,
        *,
        extra: Iterable[Path] = (),
        verify_on_load: bool = False,
    ) -> Manifest:
        """The packaged manifest plus ``extra`` ones (production models listed by path)."""
        artifacts: list[Artifact] = []
        for path in [manifest, *extra]:
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                artifacts += [cls._artifact(a, path.resolve().parent) for a in raw["artifacts"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"the model manifest {path} is unreadable: {exc}") from exc
        names = [a.name for a in artifacts]
        if len(set(names)) != len(names):
            raise ModelError(f"an artifact is listed twice across the model manifests: {sorted(names)}")
        return cls(tuple(artifacts), cache_dir, verify_on_load)

    @staticmethod
    def _artifact(a: dict[str, object], base: Path) -> Artifact:
        files = tuple(
            FileSpec(
                name=f["name"],
                sources=tuple(Source(s.get("package", ""), s["path"], base) for s in f["sources"]),
                sha256=f["sha256"],
                size=int(f["size"]),
            )
            for f in a["files"]  # type: ignore[attr-defined]
        )
        return Artifact(str(a["name"]), str(a["role"]), str(a["kind"]), files, str(a.get("license", "")))

    def verifying(self, enabled: bool = True) -> Manifest:
        """The same manifest, checking files when they are handed out to be loaded."""
        return replace(self, verify_on_load=enabled)

    def get(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise ModelError(f"no artifact {name!r} in the model manifest")

    def file_path(self, artifact: Artifact, spec: FileSpec) -> Path:
        if artifact.is_joined():
            return self.cache_dir / artifact.name / spec.name
        return spec.sources[0].resolve()

    def artifact_dir(self, name: str) -> Path:
        """Directory holding a prepared artifact's files (the cache for joined ones).

        With ``verify_on_load`` every file of the artifact is checked first.
        """
        artifact = self.get(name)
        for spec in artifact.files:
            self._checked(artifact, spec)
        return self.file_path(artifact, artifact.files[0]).parent

    def path(self, name: str, file_name: str | None = None) -> Path:
        """Path of one file of an artifact (its first file if ``file_name`` is omitted).

        With ``verify_on_load`` the file is checked against its size and sha256 first.
        """
        artifact = self.get(name)
        for spec in artifact.files:
            if file_name is None or spec.name == file_name:
                return self._checked(artifact, spec)
        raise ModelError(f"artifact {name!r} has no file {file_name!r}")

    def _checked(self, artifact: Artifact, spec: FileSpec) -> Path:
        target = self.file_path(artifact, spec)
        if self.verify_on_load:
            check_file(target, spec, f"{artifact.name}/{spec.name}", self.cache_dir / VERIFIED_CACHE)
        return target

    def check_path(self, path: Path) -> int:
        """Check every listed file at ``path`` (a file, or a directory and what is under it).

        For model files configured by path (a GGUF, a Whisper or F5 directory) rather than by
        artifact name. Returns how many listed files were checked (0: ``path`` is not listed).
        """
        root = path.resolve()
        checked = 0
        for artifact in self.artifacts:
            for spec in artifact.files:
                try:
                    target = self.file_path(artifact, spec).resolve()
                except ModelError:
                    continue
                if target == root or root in target.parents:
                    check_file(target, spec, f"{artifact.name}/{spec.name}", self.cache_dir / VERIFIED_CACHE)
                    checked += 1
        return checked


def sha256_file(path: Path, progress: Progress | None = None, label: str = "") -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(label or path.name, done, total)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified_stamp_ok(path: Path, spec: FileSpec) -> bool:
    """Skip re-hashing a file already verified, unless it changed since (size and mtime)."""
    stamp = _stamp(path)
    if not stamp.exists() or not path.exists():
        return False
    st = path.stat()
    return stamp.read_text().strip() == f"{spec.sha256} {st.st_size} {st.st_mtime_ns}"


def _write_stamp(path: Path, spec: FileSpec) -> None:
    st = path.stat()
    _stamp(path).write_text(f"{spec.sha256} {st.st_size} {st.st_mtime_ns}\n")


_CACHE_LOCK = threading.Lock()


def _identity(path: Path) -> str:
    """What changes whenever a file's content can have changed (ctime cannot be set back by hand)."""
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _read_cache(cache_file: Path) -> dict[str, str]:
    try:
        raw = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _remember(cache_file: Path, key: str, value: str) -> None:
    with _CACHE_LOCK:
        entries = _read_cache(cache_file)
        entries[key] = value
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".verified.", suffix=".tmp")
        except OSError:  # a read-only cache only costs a re-hash next time
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entries, out, indent=1, sort_keys=True)
            os.replace(tmp, cache_file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def check_file(path: Path, spec: FileSpec, label: str, cache_file: Path | None = None) -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` has the manifest's size and sha256.

    A success is remembered in ``cache_file`` under the file's identity, so the next start-up does
    not hash an unchanged file again; any write to the file changes its identity.
    """
    if not path.is_file():
        raise ModelError(f"{label}: missing {path}; run `avatar models prepare` (or `make setup`)")
    size = path.stat().st_size
    if size != spec.size:
        raise ModelIntegrityError(
            f"{label}: {path} is {size} bytes but the manifest says {spec.size}; refusing to load a "
            "model file that is not the one listed (reinstall it or run `avatar models prepare --force`)"
        )
    key = str(path.resolve())
    stamp = f"{spec.sha256} {_identity(path)}"
    if cache_file is not None and _read_cache(cache_file).get(key) == stamp:
        return
    got = sha256_file(path)
    if got != spec.sha256:
        raise ModelIntegrityError(
            f"{label}: sha256 of {path} is {got}, the manifest says {spec.sha256}; refusing to load a "
            "modified or corrupt model file (reinstall it or run `avatar models prepare --force`)"
        )
    if cache_file is not None:
        _remember(cache_file, key, stamp)


def prepare(manifest: Manifest, progress: Progress | None = None, *, force: bool = False) -> list[str]:
    """Join split artifacts into the cache and verify every file; returns what was done.

    Idempotent: a joined file whose checksum stamp still matches is skipped.

    Raises:
        ModelError: a package is missing or a checksum does not match.
    """
    done: list[str] = []
    for artifact in manifest.artifacts:
        for spec in artifact.files:
            target = manifest.file_path(artifact, spec)
            if artifact.is_joined():
                if not force and _verified_stamp_ok(target, spec):
                    done.append(f"{artifact.name}/{spec.name}: up to date")
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                written = 0
                with tmp.open("wb") as out:
                    for source in spec.sources:
                        with source.resolve().open("rb") as fh:
                            while block := fh.read(_CHUNK):
                                out.write(block)
                                written += len(block)
                                if progress:
                                    progress(f"join {artifact.name}/{spec.name}", written, spec.size)
                os.replace(tmp, target)
            got = sha256_file(target, progress, f"verify {artifact.name}/{spec.name}")
            if got != spec.sha256:
                raise ModelError(
                    f"{artifact.name}/{spec.name}: sha256 {got} does not match the manifest "
                    f"({spec.sha256}); reinstall the package or run `avatar models prepare --force`"
                )
            if artifact.is_joined():
                _write_stamp(target, spec)
            done.append(f"{artifact.name}/{spec.name}: ok")
    return done


@dataclass(frozen=True, slots=True)
class VerifyResult:
    artifact: str
    file: str
    ok: bool
    detail: str


def verify(manifest: Manifest, progress: Progress | None = None, *, full: bool = True) -> list[VerifyResult]:
    """Check every file exists with the right size and (``full``) sha256; never raises."""
    results = []
    for artifact in manifest.artifacts:
        for spec in artifact.files:
            try:
                target = manifest.file_path(artifact, spec)
            except ModelError as exc:
                results.append(VerifyResult(artifact.name, spec.name, False, str(exc)))
                continue
            if not target.exists():
                hint = "run `avatar models prepare`" if artifact.is_joined() else "run `make setup`"
                results.append(VerifyResult(artifact.name, spec.name, False, f"missing {target}; {hint}"))
                continue
            size = target.stat().st_size
            if size != spec.size:
                results.append(
                    VerifyResult(
                        artifact.name,
                        spec.name,
                        False,
                        f"size {size} != {spec.size}; run `avatar models prepare --force`",
                    )
                )
                continue
            if full and not _verified_stamp_ok(target, spec):
                got = sha256_file(target, progress, f"verify {artifact.name}/{spec.name}")
                if got != spec.sha256:
                    results.append(
                        VerifyResult(
                            artifact.name,
                            spec.name,
                            False,
                            "sha256 mismatch; run `avatar models prepare --force`",
                        )
                    )
                    continue
            results.append(VerifyResult(artifact.name, spec.name, True, str(target)))
    return results


def terminal_progress(label: str, done: int, total: int) -> None:
    """A one-line progress bar on stderr (the CLI's default progress callback)."""
    if total <= 0:
        return
    frac = min(done / total, 1.0)
    bar = "#" * int(frac * 30)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r  {label:<48} [{bar:<30}] {frac * 100:5.1f}% {done / 1e6:7.1f} MB{end}")
    sys.stderr.flush()
