"""The model manifests as the adapters see them: packaged + production, checked when loaded.

Every adapter that loads a model file asks :func:`model_manifest` for its path; with
``settings.models.verify_on_load`` (the default) the file's sha256 is checked against the manifest
first and a mismatch raises :class:`~avatar_common.modelstore.ModelIntegrityError` instead of
loading it (docs/security.md, "Model integrity").
"""

from __future__ import annotations

from pathlib import Path

from avatar.settings import Settings
from avatar_common.modelstore import Manifest


def model_manifest(settings: Settings, *, verify: bool | None = None) -> Manifest:
    """The packaged manifest plus ``settings.models.production_manifests``."""
    models = settings.models
    return Manifest.load(
        models.manifest,
        models.cache_dir,
        extra=models.production_manifests,
        verify_on_load=models.verify_on_load if verify is None else verify,
    )


def check_model_path(settings: Settings, path: Path) -> int:
    """Check the manifest-listed files at a model path given in the settings (file or directory).

    Returns how many listed files were checked; raises ``ModelIntegrityError`` on a mismatch.
    """
    if not settings.models.verify_on_load:
        return 0
    return model_manifest(settings).check_path(path)
