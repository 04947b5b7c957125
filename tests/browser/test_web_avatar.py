"""The web avatar follows the avatar control stream in Debian's Chromium (frontend/e2e/avatar.mjs),
against the real orchestrator app with scripted engines and the VTube Studio stand-in connected, so
the page and the VTube Studio bridge are driven by the same events (docs/avatar-control.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import run_browser_script
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, FakeSynthesizer, fake_container
from tests.support.audio import SpeechClip
from tests.support.auth import owner_sign_in
from tests.support.vtube_studio import VTubeStudioStandIn

pytestmark = pytest.mark.browser

REPLY = (
    "[happy] Hello! It is lovely to hear from you today. Let me tell you a rather long story about "
    "the weather, the sea and the little boats that sail on it every single morning."
)


@pytest_asyncio.fixture(scope="module")
async def standin() -> AsyncIterator[VTubeStudioStandIn]:
    server = VTubeStudioStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def avatar_server(
    built_app: Path, standin: VTubeStudioStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    settings = Settings(environment="test")
    settings.server.frontend_dist = built_app
    settings.vts.enabled = True
    settings.vts.url = standin.url
    settings.vts.token_file = tmp_path_factory.mktemp("vts") / "token.txt"
    container = fake_container(
        settings,
        recognizer=FakeRecognizer(("hello there",), utterance_ms=600_000),
        chat_model=FakeChatModel((REPLY,)),
        fast_tts=FakeSynthesizer(delay_s=0.02),
    )
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as base:
            link, _key = await owner_sign_in(container, base)  # as `avatar up` prints it
            yield base, link
    finally:
        await container.queue.stop()


async def test_the_web_avatar_follows_the_same_events_as_vtube_studio(
    avatar_server: tuple[str, str], standin: VTubeStudioStandIn, librivox: list[SpeechClip]
) -> None:
    base, link = avatar_server
    env = {"AVATAR_URL": base, "AVATAR_SIGN_IN_URL": link, "AVATAR_WAV": str(librivox[0].path)}
    result = await run_browser_script("avatar.mjs", env, timeout_s=300)

    idle, speech, after = result["idle"], result["speech"], result["afterStop"]
    assert all(s["source"] == "events" for s in idle + speech + after)
    # Idle: the head drifts while listening, the mouth stays shut.
    assert max(abs(s["headX"]) for s in idle) > 0.1 and max(s["mouth"] for s in idle) == 0
    # The reply: the mouth follows the mouth events while the audio plays.
    assert max(s["mouth"] for s in speech) > 0.5
    assert result["emotion"] == "happy"
    # The stop button closes the mouth at once.
    assert max(s["mouth"] for s in after) == 0
    # VTube Studio (the stand-in) got the same reply's mouth through the bridge.
    assert any(v.get("AvatarMouthOpen", 0) > 0.5 for _, v in standin.injections)
    assert result["vts"] == "VTube Studio: connected"  # the bridge's state, shown in the web app
    assert not [c for c in result["console"] if c.startswith("pageerror")]
