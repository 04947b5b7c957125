"""Packaged model files: locate them in their wheels, join split parts, verify sha256.

``models/manifest.json`` lists every artifact the embedded default uses. An artifact is either
*located* (a file used where its package installed it) or *joined* (parts concatenated into the
cache directory, e.g. Whisper base's two halves). Both are verified against the manifest's sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str, int, int], None]
_CHUNK = 4 * 1024 * 1024


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Source:
    package: str
    path: str

    def resolve(self) -> Path:
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

    @classmethod
    def load(cls, manifest: Path, cache_dir: Path) -> Manifest:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        artifacts = []
        for a in raw["artifacts"]:
            files = tuple(
                FileSpec(
                    name=f["name"],
                    sources=tuple(Source(s["package"], s["path"]) for s in f["sources"]),
                    sha256=f["sha256"],
                    size=int(f["size"]),
                )
                for f in a["files"]
            )
            artifacts.append(Artifact(a["name"], a["role"], a["kind"], files, a.get("license", "")))
        return cls(tuple(artifacts), cache_dir)

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
        """Directory holding a prepared artifact's files (the cache for joined ones)."""
        artifact = self.get(name)
        return self.file_path(artifact, artifact.files[0]).parent

    def path(self, name: str, file_name: str | None = None) -> Path:
        """Path of one file of an artifact (its first file if ``file_name`` is omitted)."""
        artifact = self.get(name)
        for spec in artifact.files:
            if file_name is None or spec.name == file_name:
                return self.file_path(artifact, spec)
        raise ModelError(f"artifact {name!r} has no file {file_name!r}")


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
