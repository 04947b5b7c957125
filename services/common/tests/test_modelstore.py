"""Model manifest: join split parts, verify sha256, detect corruption, skip finished work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from avatar_common.modelstore import Manifest, ModelError, prepare, verify

REPO = Path(__file__).resolve().parents[3]


def _manifest(tmp_path: Path, sha: str, size: int) -> Manifest:
    # Two small real files of an installed package stand in for split weights.
    raw = {
        "version": 1,
        "artifacts": [
            {
                "name": "joined",
                "role": "test",
                "kind": "join",
                "files": [
                    {
                        "name": "both.txt",
                        "sources": [
                            {"package": "avatar_common", "path": "__init__.py"},
                            {"package": "avatar_common", "path": "py.typed"},
                        ],
                        "sha256": sha,
                        "size": size,
                    }
                ],
            }
        ],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(raw))
    return Manifest.load(path, tmp_path / "cache")


def _expected() -> tuple[str, int]:
    import avatar_common

    base = Path(avatar_common.__file__).parent
    data = (base / "__init__.py").read_bytes() + (base / "py.typed").read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_prepare_joins_and_verifies_then_skips(tmp_path: Path) -> None:
    sha, size = _expected()
    manifest = _manifest(tmp_path, sha, size)
    seen: list[tuple[str, int, int]] = []
    assert prepare(manifest, lambda label, done, total: seen.append((label, done, total))) == [
        "joined/both.txt: ok"
    ]
    assert any(label.startswith("join") for label, _, _ in seen)
    assert manifest.path("joined").stat().st_size == size
    assert prepare(manifest) == ["joined/both.txt: up to date"]
    assert all(r.ok for r in verify(manifest))


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    _, size = _expected()
    manifest = _manifest(tmp_path, "0" * 64, size)
    with pytest.raises(ModelError, match="does not match"):
        prepare(manifest)


def test_verify_reports_missing_and_corrupt(tmp_path: Path) -> None:
    sha, size = _expected()
    manifest = _manifest(tmp_path, sha, size)
    [missing] = verify(manifest)
    assert not missing.ok and "avatar models prepare" in missing.detail
    prepare(manifest)
    target = manifest.path("joined")
    target.write_bytes(b"x" * size)  # same size, other content: only the hash can tell
    [corrupt] = verify(manifest)
    assert not corrupt.ok and "sha256" in corrupt.detail


def test_missing_package_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            {
                "artifacts": [
                    {
                        "name": "x",
                        "role": "r",
                        "kind": "locate",
                        "files": [
                            {
                                "name": "f",
                                "sources": [{"package": "no_such_package_zz", "path": "f"}],
                                "sha256": "0",
                                "size": 1,
                            }
                        ],
                    }
                ]
            }
        )
    )
    [result] = verify(Manifest.load(path, tmp_path))
    assert not result.ok and "make setup" in result.detail


def test_the_real_manifest_is_complete() -> None:
    manifest = Manifest.load(REPO / "models" / "manifest.json", REPO / "models" / "cache")
    roles = {a.role for a in manifest.artifacts}
    assert roles >= {"asr", "vad", "llm", "tts-fast", "tts-hq", "speaker-encoder", "text-embedding"}
    for artifact in manifest.artifacts:
        for spec in artifact.files:
            assert len(spec.sha256) == 64 and spec.size > 0
