"""Composition root: the one place that turns a :class:`Settings` into running adapters.

Nothing is built at import time. :func:`build_container` chooses each adapter from the settings
(embedded default or the compose/production placement) and :meth:`Container.aclose` releases
whatever was started (subprocesses, pools, workers), in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from avatar.application.ports.asr import SpeechRecognizer
from avatar.application.ports.clock import Clock
from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatModel, TextEmbedder
from avatar.application.ports.prosody import ProsodyAnalyzer
from avatar.application.ports.queue import TaskQueue
from avatar.application.ports.speaker import SpeakerEncoder
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer
from avatar.settings import Settings

if TYPE_CHECKING:
    from avatar.application.avatar import AvatarHub
    from avatar.application.voice_style import StyledSynthesizer

log = logging.getLogger(__name__)


@dataclass
class Container:
    """Every adapter the application uses, built from one :class:`Settings`.

    Tests build one directly with fakes from ``fakes.py`` or real adapters; production code gets
    one from :func:`build_container`.
    """

    settings: Settings
    clock: Clock
    recognizer: SpeechRecognizer
    chat_model: ChatModel
    text_embedder: TextEmbedder
    fast_tts: SpeechSynthesizer
    hq_tts: SpeechSynthesizer
    speaker_encoder: SpeakerEncoder
    prosody: ProsodyAnalyzer
    uow: UnitOfWorkFactory
    object_store: ObjectStore
    queue: TaskQueue
    #: Extra adapters keyed by name (e.g. the session-state store) for capabilities added later.
    extras: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a cleanup to run (last registered first) in :meth:`aclose`."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:  # cleanup must go on for the rest
                log.exception("error while closing an adapter")

    async def health(self) -> list[ComponentHealth]:
        """Each dependency's status; a failing check is reported, never raised."""
        checks: list[tuple[str, Callable[[], Awaitable[ComponentHealth]]]] = [
            ("asr", self.recognizer.health),
            ("llm", self.chat_model.health),
            ("tts_fast", self.fast_tts.health),
            ("tts_hq", self.hq_tts.health),
            ("prosody", self.prosody.health),
            ("database", self.uow.health),
            ("object_store", self.object_store.health),
        ]
        for extra in ("session_state", "vtube_studio"):
            adapter = self.extras.get(extra)
            if adapter is not None:
                checks.append((extra, adapter.health))
        results = []
        for name, check in checks:
            try:
                results.append(await check())
            except Exception as exc:  # a health check must never take the endpoint down
                results.append(ComponentHealth(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}"))
        return results


async def build_container(settings: Settings) -> Container:
    """Build and start every adapter the settings ask for.

    The adapters' modules are imported here, not at the top, so that importing the application
    never loads a model or a heavy library.
    """
    from avatar.infrastructure.asr import build_recognizer
    from avatar.infrastructure.clock import SystemClock
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.embedding import build_text_embedder
    from avatar.infrastructure.llm import build_chat_model
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.prosody import build_prosody_analyzer
    from avatar.infrastructure.queue import build_task_queue
    from avatar.infrastructure.session_state import build_session_state_store
    from avatar.infrastructure.speaker import build_speaker_encoder
    from avatar.infrastructure.tts import build_synthesizers

    stack = contextlib.AsyncExitStack()
    try:
        uow = await build_unit_of_work_factory(settings, stack)
        object_store = await build_object_store(settings, stack)
        queue = await build_task_queue(settings, stack)
        chat_model = await build_chat_model(settings, stack)
        recognizer = await build_recognizer(settings, stack)
        fast_tts, hq_tts = await build_synthesizers(settings, stack)
        container = Container(
            settings=settings,
            clock=SystemClock(),
            recognizer=recognizer,
            chat_model=chat_model,
            text_embedder=await build_text_embedder(settings, stack),
            fast_tts=fast_tts,
            hq_tts=hq_tts,
            speaker_encoder=await build_speaker_encoder(settings, stack),
            prosody=await build_prosody_analyzer(settings, stack),
            uow=uow,
            object_store=object_store,
            queue=queue,
        )
        container.extras["session_state"] = await build_session_state_store(settings, stack)
    except BaseException:
        await stack.aclose()
        raise
    container.on_close(stack.aclose)
    return container


def avatar_hub(container: Container) -> AvatarHub:
    """The avatar event hub of this process (docs/avatar-control.md), built on first use.

    Reading ``config/avatar_poses.toml`` here makes a mistake in it stop the start-up with a
    message naming the key. The conversation reports to the hub through
    ``ConversationDeps.observer``; ``WS /ws/{id}/avatar`` and the VTube Studio bridge subscribe.
    """
    from avatar.application.avatar import AvatarHub, load_pose_config

    hub: AvatarHub | None = container.extras.get("avatar_hub")
    if hub is None:
        hub = AvatarHub(load_pose_config(container.settings.vts.poses_file))
        container.extras["avatar_hub"] = hub
        container.on_close(hub.aclose)
    return hub


async def start_vtube_studio_bridge(container: Container) -> None:
    """Start the VTube Studio bridge when ``AVATAR_VTS__ENABLED`` (stopped by ``aclose``)."""
    settings = container.settings.vts
    if not settings.enabled or "vtube_studio" in container.extras:
        return
    from avatar.infrastructure.vtube_studio import VTubeStudioBridge

    hub = avatar_hub(container)
    bridge = VTubeStudioBridge(settings, hub.subscribe_stage, hub.poses)
    await bridge.start()
    container.extras["vtube_studio"] = bridge
    container.on_close(bridge.aclose)


def voice_styled(container: Container, synthesizer: SpeechSynthesizer) -> StyledSynthesizer:
    """``synthesizer`` speaking each reply in its emotion's style from the persona file."""
    from avatar.application.voice_style import StyledSynthesizer, load_voice_styles

    return StyledSynthesizer(synthesizer, load_voice_styles(container.settings.llm.persona_file))
