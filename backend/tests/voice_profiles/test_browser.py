"""The voice-profile page in Debian's Chromium (frontend/e2e/voices.mjs): record a sample from a fake
microphone playing real speech (MediaRecorder, WebM/Opus), save, preview (Piper, stock-voice notice),
pick it for the conversation, delete; then no row and no object is left (real PostgreSQL, real S3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from avatar.presentation.app import create_app
from backend.tests.voice_profiles.stack import RealParts, real_parts
from tests.browser.support import run_browser_script
from tests.e2e.harness import running_server
from tests.support.audio import SpeechClip
from tests.support.auth import owner_sign_in
from tests.support.servers import S3Server

REPO = Path(__file__).resolve().parents[3]
FRONTEND = REPO / "frontend"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def web_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A production build of the web app in a folder of this test's own."""
    if shutil.which("node") is None or not CHROMIUM.exists() or not (FRONTEND / "node_modules").is_dir():
        pytest.fail("node, chromium and frontend/node_modules are needed: run `make setup-test`")
    out = tmp_path_factory.mktemp("web-dist")
    subprocess.run(
        ["npx", "vite", "build", "--outDir", str(out), "--emptyOutDir", "--logLevel", "warn"],
        cwd=FRONTEND,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory, librivox: list[SpeechClip]) -> Path:
    """Two LibriVox utterances back to back as 16-bit WAV: what the fake microphone plays (looped)."""
    out = tmp_path_factory.mktemp("mic") / "speech.wav"
    subprocess.run(
        ["sox", str(librivox[0].path), str(librivox[2].path), "-b", "16", "-c", "1", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest_asyncio.fixture(scope="module")
async def server(
    module_database_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, web_build: Path
) -> AsyncIterator[tuple[str, RealParts]]:
    async with real_parts(module_database_url, s3_server, tmp_path_factory.mktemp("avatar-var")) as parts:
        parts.settings.server.frontend_dist = web_build
        async with running_server(create_app(parts.settings, parts.container)) as base:
            yield base, parts


async def _run_page(base: str, wav: Path, parts: RealParts) -> dict[str, Any]:
    link, _key = await owner_sign_in(parts.container, base)
    env = {
        "AVATAR_URL": base,
        "AVATAR_SIGN_IN_URL": link,
        "AVATAR_WAV": str(wav),
        "AVATAR_RECORD_MS": "8000",
    }
    result: dict[str, Any] = await run_browser_script("voices.mjs", env, timeout_s=600)
    return result


async def test_record_save_preview_pick_and_delete_in_the_browser(
    server: tuple[str, RealParts], mic_wav: Path
) -> None:
    base, parts = server
    result = await _run_page(base, mic_wav, parts)

    profile_id = uuid.UUID(result["profileId"])
    stored = result["stored"]
    assert stored["name"] == "My recorded voice"
    assert stored["metadata"]["source_format"] in {"webm", "ogg"}
    assert 5.0 <= stored["duration_sec"] <= 30.0
    assert len(stored["transcript"]) > 0  # given by the (fake) ASR since the form left it empty
    assert "My recorded voice" in result["itemText"]
    assert "cannot clone" in result["notice"]
    assert result["previewStatus"].startswith("Playing")
    assert result["selected"] is True
    assert result["defaultSelectedAfterDelete"] is True
    assert not [c for c in result["console"] if c.startswith("pageerror")]

    async with parts.factory.engine.connect() as conn:
        query = text("SELECT count(*) FROM voice_profiles WHERE profile_id = :p")
        rows = (await conn.execute(query, {"p": profile_id})).scalar_one()
    assert rows == 0
    leftovers = [p for p in parts.bucket_dir.rglob("*") if p.is_file() and str(profile_id) in str(p)]
    assert leftovers == []
    assert (ARTIFACTS / "web-app-voices.png").stat().st_size > 10_000
