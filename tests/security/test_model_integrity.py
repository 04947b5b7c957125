"""Finding F9 (docs/security.md): model files were only checked by ``avatar models prepare``.

A file swapped after preparation (a backdoored or corrupt model) was loaded without a look. Here
real model files are copied, verified, then tampered with (same size), and the loaders must refuse
them with an error that names the file; unchanged files are not hashed twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from avatar.infrastructure.asr import service_config
from avatar.infrastructure.llm import embedded_model_path
from avatar.infrastructure.models import model_manifest
from avatar.settings import Settings
from avatar_common import modelstore
from avatar_common.modelstore import ModelIntegrityError


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.fixture
def packaged() -> Settings:
    return Settings(_env_file=None)


def test_a_tampered_packaged_model_refuses_to_load(tmp_path: Path, packaged: Settings) -> None:
    source = model_manifest(packaged, verify=False).artifact_dir("whisper-base")
    cache = tmp_path / "cache"
    shutil.copytree(source, cache / "whisper-base")
    settings = Settings(_env_file=None, models={"cache_dir": cache})
    assert Path(service_config(settings).model) == cache / "whisper-base"  # intact: loads

    _flip_byte(cache / "whisper-base" / "tokenizer.json", offset=len("{"))
    with pytest.raises(ModelIntegrityError, match=r"whisper-base/tokenizer\.json.*refusing to load"):
        service_config(settings)


def _production_manifest(tmp_path: Path, name: str, role: str, files: dict[str, Path]) -> Path:
    """A manifest of model files outside the packages, listed by path relative to the manifest."""
    entries = [
        {
            "name": file_name,
            "sources": [{"path": str(path.relative_to(tmp_path))}],
            "sha256": modelstore.sha256_file(path),
            "size": path.stat().st_size,
        }
        for file_name, path in files.items()
    ]
    manifest = tmp_path / "production-manifest.json"
    artifact = {"name": name, "role": role, "kind": "locate", "files": entries}
    manifest.write_text(json.dumps({"version": 1, "artifacts": [artifact]}))
    return manifest


def test_a_production_model_listed_in_its_own_manifest_is_checked(tmp_path: Path, packaged: Settings) -> None:
    gguf = tmp_path / "models" / "production.gguf"
    gguf.parent.mkdir()
    shutil.copyfile(model_manifest(packaged, verify=False).path("smollm2-135m-instruct"), gguf)
    manifest = _production_manifest(tmp_path, "production-llm", "llm", {"production.gguf": gguf})
    settings = Settings(
        _env_file=None,
        models={"production_manifests": [manifest], "cache_dir": tmp_path / "cache"},
        llm={"gguf_path": gguf},
    )
    assert embedded_model_path(settings) == gguf

    _flip_byte(gguf, offset=gguf.stat().st_size // 2)
    with pytest.raises(ModelIntegrityError, match=r"production-llm/production\.gguf"):
        embedded_model_path(settings)


def test_a_production_asr_directory_is_checked(tmp_path: Path, packaged: Settings) -> None:
    source = model_manifest(packaged, verify=False).artifact_dir("whisper-base")
    model_dir = tmp_path / "whisper-prod"
    model_dir.mkdir()
    small = ("config.json", "vocabulary.json")
    for name in small:
        shutil.copyfile(source / name, model_dir / name)
    manifest = _production_manifest(tmp_path, "whisper-prod", "asr", {n: model_dir / n for n in small})
    settings = Settings(
        _env_file=None,
        models={"production_manifests": [manifest], "cache_dir": tmp_path / "cache"},
        asr={"model": str(model_dir)},
    )
    assert service_config(settings).model == str(model_dir)
    _flip_byte(model_dir / "vocabulary.json", offset=3)
    with pytest.raises(ModelIntegrityError, match=r"whisper-prod/vocabulary\.json"):
        service_config(settings)


def test_verification_is_cached_by_file_identity(
    tmp_path: Path, packaged: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    vad = model_manifest(packaged, verify=False).path("silero-vad")
    copy = tmp_path / "vad" / "silero_vad.onnx"
    copy.parent.mkdir()
    shutil.copyfile(vad, copy)
    manifest = _production_manifest(tmp_path, "vad-copy", "vad", {"silero_vad.onnx": copy})
    settings = Settings(
        _env_file=None, models={"production_manifests": [manifest], "cache_dir": tmp_path / "cache"}
    )
    hashed: list[Path] = []
    real = modelstore.sha256_file

    def counting(path: Path, *args: Any) -> str:
        hashed.append(path)
        return real(path, *args)

    monkeypatch.setattr(modelstore, "sha256_file", counting)

    model_manifest(settings).path("vad-copy")
    model_manifest(settings).path("vad-copy")  # the next start-up
    assert hashed == [copy]  # hashed once

    before = copy.stat()
    _flip_byte(copy)
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    with pytest.raises(ModelIntegrityError):
        model_manifest(settings).path("vad-copy")  # the change is still noticed (ctime/inode)
    assert len(hashed) == 2


def test_a_broken_production_manifest_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    with pytest.raises(modelstore.ModelError, match=r"nowhere\.json is unreadable"):
        model_manifest(Settings(_env_file=None, models={"production_manifests": [missing]}))
    model = tmp_path / "m.bin"
    model.write_bytes(b"weights")
    manifest = _production_manifest(tmp_path, "gone", "llm", {"m.bin": model})
    model.unlink()
    settings = Settings(_env_file=None, models={"production_manifests": [manifest], "cache_dir": tmp_path})
    with pytest.raises(modelstore.ModelError, match=r"gone/m\.bin: missing"):
        model_manifest(settings).path("gone")
