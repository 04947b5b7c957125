"""The web app end to end: Debian's Chromium, driven by Playwright (frontend/e2e/talk.mjs), with a fake
microphone playing a LibriVox WAV, against a real uvicorn server of ``create_app`` on the embedded
stack (Whisper, SmolLM2 via llama.cpp, Piper/Kokoro, PostgreSQL + pgvector, filesystem objects).

Screenshots are kept in ``test-artifacts/``."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from avatar.bootstrap import build_container
from avatar.presentation.app import create_app
from tests.browser.support import ARTIFACTS, run_browser_script
from tests.e2e.harness import running_server
from tests.e2e.test_conversation import e2e_settings
from tests.support.audio import SpeechClip
from tests.support.auth import owner_sign_in

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def speech_wav(
    tmp_path_factory: pytest.TempPathFactory, librivox: list[SpeechClip]
) -> tuple[Path, SpeechClip]:
    """A LibriVox clip with silence around it, as 16-bit PCM WAV (what Chromium's fake mic reads).

    The lead-in lets the page start streaming first; the tail lets the server's VAD end the utterance.
    """
    clip = librivox[0]
    out = tmp_path_factory.mktemp("wav") / "speech.wav"
    subprocess.run(
        ["sox", str(clip.path), "-b", "16", "-e", "signed-integer", "-c", "1", str(out), "pad", "1.5", "6"],
        check=True,
        capture_output=True,
    )
    return out, clip


@pytest_asyncio.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str, built_app: Path
) -> AsyncIterator[tuple[str, str]]:
    settings = e2e_settings(tmp_path_factory.mktemp("web"), module_database_url, llama_server)
    settings.server.frontend_dist = built_app
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            link, _key = await owner_sign_in(container, base)
            yield base, link
    finally:
        await container.aclose()


async def test_talk_in_the_browser(server: tuple[str, str], speech_wav: tuple[Path, SpeechClip]) -> None:
    wav, clip = speech_wav
    base, link = server
    env = {
        "AVATAR_URL": base,
        "AVATAR_SIGN_IN_URL": link,
        "AVATAR_WAV": str(wav),
    }
    result = await run_browser_script("talk.mjs", env, timeout_s=900)

    heard = _words(result["transcript"])
    expected = _words(clip.transcript)
    assert len(heard & expected) >= len(expected) // 2, (result["transcript"], clip.transcript)
    assert result["playedChunks"] >= 1
    assert result["playedChunks"] == result["receivedChunks"]
    assert result["mouthMax"] > 0.05  # the mouth opened with the reply's sound
    assert result["playedAfterHq"] == result["playedChunks"] + 1  # the HQ file played to its end
    assert result["reply"] and result["reply"] != "…"
    assert result["emotion"] in {"happy", "sad", "angry", "surprised", "neutral", "excited"}
    assert result["errors"] == []
    assert result["koreanStart"] == "대화"
    (turn,) = result["history"]
    assert result["transcript"] in turn
    assert result["reply"][:20] in turn
    assert not [c for c in result["console"] if c.startswith("pageerror")]
    for name in ("web-app-talk.png", "web-app-talk-phone-ko.png", "web-app-history.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
