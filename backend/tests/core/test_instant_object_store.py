"""The served instant engines (``avatar serve orchestrator --instant-engines``) keep every stored
object as the app does: encrypted files under ``object_store.root``, not in the process's memory
(issue 15, item 7: a soak's stored audio must not grow the orchestrator's RSS; docs/deploy.md,
"Load testing")."""

from __future__ import annotations

from pathlib import Path

from avatar.bootstrap import build_instant_serving_container
from avatar.settings import Settings


async def test_the_instant_server_writes_objects_to_encrypted_files_on_disk(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.engines = "instant"
    settings.data_dir = tmp_path / "data"
    settings.object_store.root = tmp_path / "objects"
    container = await build_instant_serving_container(settings)
    try:
        audio = b"RIFF" + bytes(range(256)) * 64
        url = await container.object_store.put("raw_inputs/s/t.wav", audio, "audio/wav")
        files = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].stat().st_size >= len(audio)
        assert audio[4:260] not in files[0].read_bytes()  # encrypted at rest, like the app's store
        assert await container.object_store.get("raw_inputs/s/t.wav") == audio
        assert "raw_inputs/s/t.wav" in url
        await container.object_store.delete("raw_inputs/s/t.wav")
        assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    finally:
        await container.aclose()
