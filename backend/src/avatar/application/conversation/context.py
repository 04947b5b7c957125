"""A session's standing as its client sees it: the voice choices, the phase, the turn count, and
the one way messages reach the client (its :class:`Outbox`). Replies use it as their
:class:`~avatar.application.conversation.reply.ReplyHost`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from avatar.application.avatar.hub import ConversationObserver
from avatar.application.conversation.events import ErrorMsg, NoticeMsg, Phase, ServerMessage, SessionStateMsg
from avatar.application.conversation.outbox import Outbox
from avatar.application.conversation.ports import VoiceResolver
from avatar.application.ports.tts import VoiceReference
from avatar.domain.models import TTSMode

log = logging.getLogger(__name__)


class SessionContext:
    """Mutable state of one session shared by the session and its replies."""

    def __init__(
        self,
        session_id: uuid.UUID,
        outbox: Outbox,
        *,
        tts_mode: TTSMode,
        voice: str | None,
        voice_profile_id: uuid.UUID | None,
        language: str | None,
        turn_count: int,
        observer: ConversationObserver | None = None,
    ) -> None:
        self.session_id = session_id
        self._observer = observer
        self.outbox = outbox
        self.tts_mode = tts_mode
        self.voice = voice
        self.voice_profile_id = voice_profile_id
        self.language = language
        self.turn_count = turn_count
        self.phase = Phase.LISTENING
        self._reference: VoiceReference | None = None
        self._notices_sent: set[str] = set()

    @property
    def reference(self) -> VoiceReference | None:
        """The cloning reference of the chosen voice profile (``None``: the engine's voice)."""
        return self._reference

    async def choose_voice(
        self,
        mode: TTSMode,
        voice: str | None,
        voice_profile_id: uuid.UUID | None,
        resolver: VoiceResolver | None,
    ) -> None:
        """Apply a ``set_tts_mode``; an unknown profile is an error and the default voice stays."""
        self.tts_mode = mode
        if voice is not None:
            self.voice = voice or None
        if voice_profile_id == self.voice_profile_id:
            return
        self.voice_profile_id = voice_profile_id
        self._reference = None
        if voice_profile_id is not None and resolver is not None:
            self._reference = await resolver(voice_profile_id, self.session_id)
            if self._reference is None:
                self.voice_profile_id = None
                self.error(
                    "VOICE_PROFILE_NOT_FOUND",
                    f"voice profile {voice_profile_id} does not exist; the default voice is used",
                )

    def state_message(self, *, resumed: bool = False) -> SessionStateMsg:
        return SessionStateMsg(
            session_id=self.session_id,
            state=self.phase,
            resumed=resumed,
            turns=self.turn_count,
            tts_mode=self.tts_mode,
            voice=self.voice,
            voice_profile_id=self.voice_profile_id,
        )

    def snapshot(self) -> dict[str, str]:
        """What another replica needs to resume this session beyond the client's voice choices
        (``ResumableSession.extra``)."""
        return {"turn_count": str(self.turn_count), "language": self.language or ""}

    # --- the ReplyHost side ---------------------------------------------------------------

    def send(self, message: ServerMessage) -> None:
        self.outbox.send(message)

    def set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.outbox.send(self.state_message())
            self.observe(lambda o: o.phase_changed(self.session_id, phase.value))

    def observe(self, call: Callable[[ConversationObserver], None]) -> None:
        """Tell the avatar observer (its methods return at once; a failure never ends the turn)."""
        if self._observer is None:
            return
        try:
            call(self._observer)
        except Exception:
            log.exception("session %s: the avatar observer failed", self.session_id)

    def notice(self, code: str, message: str) -> None:
        """A notice sent at most once per session (e.g. ``VOICE_SUBSTITUTED``)."""
        if code in self._notices_sent:
            return
        self._notices_sent.add(code)
        self.outbox.send(NoticeMsg(code=code, message=message))

    def error(self, code: str, message: str, *, cause: BaseException | None = None) -> None:
        """An ``error`` to the client. A ``cause``'s own text (addresses, paths, a dependency's
        error) goes to the log under the ``trace_id`` the client gets, not into the message
        (docs/protocol.md, Limits and errors)."""
        trace_id = str(uuid.uuid4())
        if cause is not None:
            log.warning("session %s: %s (trace_id %s): %s", self.session_id, code, trace_id, cause)
            message = f"{message} (trace id {trace_id})"
        self.outbox.send(ErrorMsg(code=code, message=message, trace_id=trace_id))
