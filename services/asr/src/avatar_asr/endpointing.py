"""Endpointing as a pure state machine: one VAD probability per frame in, typed decisions out.

No audio, no clock, no Whisper and no I/O: :class:`Endpointer` only counts frames and says what the
stream should do now (an utterance opened, speech confirmed, a partial is due, start or cancel the
speculative final, the endpoint). Positions are absolute 16 kHz sample indices since the stream opened,
so the stream can slice its audio with them. The stream (``stream.py``) carries the decisions out and
reports back the two things only it can know: a speculative decode was refused (queue full) and a
partial decode finished.

The rules (see ``services/asr/README.md``, "Latency design"):

* a frame with probability >= ``threshold`` opens an utterance, which takes up to ``preroll_ms`` of
  the idle audio before it (never audio of an earlier utterance);
* inside an utterance a frame counts as speech when >= ``threshold - 0.15`` (hysteresis); the
  utterance is *confirmed* (``SpeechStarted``) after ``min_speech_ms`` of speech frames;
* ``min_silence_ms`` of silence ends it: an ``Endpoint`` when confirmed, otherwise it is dropped as a
  blip; a confirmed utterance reaching ``max_utterance_s`` ends too;
* after ``speculative_silence_ms`` of silence the final decode may start early
  (``SpeculationStarted``); speech resuming cancels it; an ``Endpoint`` says whether the speculation
  still covers the utterance and can be used;
* the quiet rule (when the stream gives each frame's loudness): the VAD keeps saying "speech" for
  ~30-220 ms after the last loud sound of a word, so a frame the VAD calls speech but that is
  ``quiet_ratio`` below the utterance's loudest speech frame counts as quiet, and
  ``speculative_quiet_ms`` of quiet frames start the speculation early, anchored at the last loud
  frame. A loud speech frame after it cancels it, and so does the VAD still hearing speech
  :data:`QUIET_SPAN_MS` after that anchor (soft speech, not a word's decay); then the VAD's own
  silence decides as before. A speculation that speech cancelled counts as the partial of its audio
  (docs/adr/0014-voice-latency.md, tenth round);
* while speech arrives a ``PartialDue`` comes at most every ``partial_interval_ms`` of new audio and
  never while the previous partial is still being decoded;
* the turn detector: when the speculative decode's words read as a finished turn
  (:func:`looks_complete`, told through :meth:`Endpointer.speculation_complete`), ``complete_silence_ms``
  of silence is enough to end the utterance instead of ``min_silence_ms``; a trailing "and", "um"
  or "..." keeps the full wait (docs/adr/0014-voice-latency.md).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from avatar_asr.config import SAMPLE_RATE, ASRConfig

#: Hysteresis: once inside an utterance a frame stays "speech" down to this much under the threshold.
HYSTERESIS = 0.15
#: Least "speech" probability inside an utterance, whatever the threshold.
MIN_SPEECH_PROBABILITY = 0.01
#: A speculation started by the quiet rule is cancelled when the VAD still hears speech this long after
#: the last loud frame: the VAD's lag after a word's last loud sound measured 30-220 ms on the bench's
#: LibriVox clips (docs/adr/0014-voice-latency.md, tenth round), so longer is soft speech.
QUIET_SPAN_MS = 320.0


@dataclass(frozen=True, slots=True)
class EndpointingConfig:
    """The endpointing rules' numbers (see the module docstring)."""

    threshold: float = 0.5
    min_speech_ms: float = 250.0
    min_silence_ms: float = 500.0
    speculative_silence_ms: float = 160.0
    partial_interval_ms: float = 700.0
    max_utterance_s: float = 20.0
    preroll_ms: float = 300.0
    tail_pad_ms: float = 200.0
    #: Silence that ends a turn whose words read as finished (0: the turn detector is off).
    complete_silence_ms: float = 0.0
    #: Quiet frames (the VAD's speech, but quiet) that start the speculation early (0: the quiet
    #: rule is off; it also needs each frame's loudness, see :meth:`Endpointer.feed`).
    speculative_quiet_ms: float = 0.0
    #: A speech frame quieter than this share of the utterance's loudest speech frame (RMS) is quiet.
    quiet_ratio: float = 0.1
    #: ... and any frame quieter than this RMS (float samples; -50 dBFS).
    quiet_floor: float = 100.0 / 32768.0
    frame_samples: int = 512
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def from_asr(cls, config: ASRConfig) -> EndpointingConfig:
        return cls(
            threshold=config.vad_threshold,
            min_speech_ms=config.min_speech_ms,
            min_silence_ms=config.min_silence_ms,
            speculative_silence_ms=config.speculative_silence_ms,
            complete_silence_ms=config.complete_silence_ms,
            speculative_quiet_ms=config.speculative_quiet_ms,
            partial_interval_ms=config.partial_interval_ms,
            max_utterance_s=config.max_utterance_s,
        )

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.frame_samples / self.sample_rate

    @property
    def tail_pad_samples(self) -> int:
        """The silence after the last speech frame that a final decode includes, in samples."""
        return int(self.tail_pad_ms * self.sample_rate / 1000)

    @property
    def preroll_frames(self) -> int:
        return max(1, int(self.preroll_ms / self.frame_ms))


class CancelReason(enum.StrEnum):
    SPEECH_RESUMED = "speech_resumed"
    UTTERANCE_CLOSED = "utterance_closed"


class EndReason(enum.StrEnum):
    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    FLUSH = "flush"


@dataclass(frozen=True, slots=True)
class UtteranceOpened:
    """A speech frame opened a (not yet confirmed) utterance; ``start`` includes the pre-roll."""

    start: int


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The utterance has enough speech to count (``at``: the position when that became true)."""

    start: int
    at: int


@dataclass(frozen=True, slots=True)
class PartialDue:
    """Decode ``[start, end)`` as a partial; call :meth:`Endpointer.partial_finished` when done."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SpeculationStarted:
    """Start the final decode of ``[start, end)`` now (``speech_end``: after the last speech frame,
    or after the last loud one when the quiet rule started it: ``quiet``; the decode's input is
    padded with silence to ``speech_end`` plus the tail pad)."""

    start: int
    end: int
    speech_end: int
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class SpeculationCancelled:
    """The speculative final is stale: cancel it (or ignore its result)."""

    reason: CancelReason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The utterance ended: its final covers ``[start, end)``.

    ``use_speculation``: the running speculative decode covers exactly this audio; use its result.
    """

    start: int
    end: int
    speech_end: int
    reason: EndReason
    use_speculation: bool


@dataclass(frozen=True, slots=True)
class UtteranceClosed:
    """The utterance (confirmed or not) is over; the next speech frame opens a new one."""


@dataclass(frozen=True, slots=True)
class NoSpeech:
    """A flush found nothing said since the previous flush."""


Decision = (
    UtteranceOpened
    | SpeechStarted
    | PartialDue
    | SpeculationStarted
    | SpeculationCancelled
    | Endpoint
    | UtteranceClosed
    | NoSpeech
)


class Phase(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"  # speech heard, not yet long enough to count
    SPEAKING = "speaking"  # confirmed


class Endpointer:
    """The endpointing state of one stream (see the module docstring)."""

    def __init__(self, config: EndpointingConfig) -> None:
        self.config = config
        self.phase = Phase.IDLE
        self.position = 0  # samples framed so far
        self.start = 0  # first sample of the open utterance
        self.speech_end = 0  # sample after the latest speech frame
        self.voice_end = 0  # sample after the latest loud speech frame (the quiet rule)
        self._idle_frames = 0  # idle frames since the last utterance closed (the pre-roll pool)
        self._speech_frames = 0
        self._silence_frames = 0
        self._quiet_frames = 0  # frames since the latest loud speech frame
        self._peak = 0.0  # the utterance's loudest speech frame (RMS)
        #: The running speculation's anchor (its ``speech_end``), and whether the quiet rule started it.
        self._speculation_end: int | None = None
        self._speculation_quiet = False
        #: The quiet rule was tried in this pause and the VAD went on hearing speech: wait for its silence.
        self._quiet_spent = False
        #: The running speculation's words read as a finished turn (the turn detector).
        self._looks_complete = False
        self._partial_in_flight = False
        self._last_partial_len = 0
        self._heard_since_flush = False

    # -- queries --------------------------------------------------------------------------------
    @property
    def in_utterance(self) -> bool:
        return self.phase is not Phase.IDLE

    @property
    def speculating(self) -> bool:
        return self._speculation_end is not None

    @property
    def retain_from(self) -> int:
        """Audio before this position is no longer needed by any future decision."""
        if self.in_utterance:
            return self.start
        return max(0, self.position - self.config.preroll_frames * self.config.frame_samples)

    # -- input ----------------------------------------------------------------------------------
    def feed(self, probability: float, level: float | None = None) -> list[Decision]:
        """One frame's speech probability (and its RMS loudness, for the quiet rule); the decisions
        it leads to, in order. Without ``level`` every speech frame counts as loud."""
        cfg = self.config
        self.position += cfg.frame_samples
        if self.phase is Phase.IDLE:
            self._idle_frames += 1
            if probability < cfg.threshold:
                return []
            preroll = min(self._idle_frames, cfg.preroll_frames)
            self.phase = Phase.PENDING
            self.start = self.position - preroll * cfg.frame_samples
            self._speech_frames, self._silence_frames, self._quiet_frames = 1, 0, 0
            self._peak = level or 0.0
            self.speech_end = self.voice_end = self.position
            return [UtteranceOpened(self.start)]
        out: list[Decision] = []
        if probability >= max(cfg.threshold - HYSTERESIS, MIN_SPEECH_PROBABILITY):
            if self._silence_frames and self._speculation_end is not None:
                out.append(self._cancel(CancelReason.SPEECH_RESUMED))
            self._silence_frames = 0
            self._speech_frames += 1
            self.speech_end = self.position
            if level is not None:
                self._peak = max(self._peak, level)
            if level is None or level >= max(cfg.quiet_ratio * self._peak, cfg.quiet_floor):
                if self._quiet_frames and self._speculation_end is not None:
                    out.append(self._cancel(CancelReason.SPEECH_RESUMED))
                self._quiet_frames = 0
                self._quiet_spent = False
                self.voice_end = self.position
            else:
                self._quiet_frames += 1
                if (
                    self._speculation_quiet
                    and self._speculation_end is not None
                    and (self.speech_end - self._speculation_end) * 1000 / cfg.sample_rate > QUIET_SPAN_MS
                ):
                    self._quiet_spent = True  # soft speech, not a word's decay: the VAD decides
                    out.append(self._cancel(CancelReason.SPEECH_RESUMED))
        else:
            self._silence_frames += 1
            self._quiet_frames += 1
        if self.phase is Phase.PENDING and self._speech_frames * cfg.frame_ms >= cfg.min_speech_ms:
            self.phase = Phase.SPEAKING
            self._heard_since_flush = True
            out.append(SpeechStarted(self.start, self.position))
        silence_ms = self._silence_frames * cfg.frame_ms
        if silence_ms >= self._silence_needed_ms():
            return out + self._close(EndReason.SILENCE)
        if self.phase is not Phase.SPEAKING:
            return out
        if self.position - self.start >= cfg.max_utterance_s * cfg.sample_rate:
            return out + self._close(EndReason.MAX_LENGTH)
        no_speculation = self._speculation_end is None
        if no_speculation and silence_ms >= cfg.speculative_silence_ms:
            out.append(self._speculate(self.speech_end, quiet=False))
        elif (
            no_speculation
            and cfg.speculative_quiet_ms > 0
            and not self._quiet_spent
            and self._quiet_frames * cfg.frame_ms >= cfg.speculative_quiet_ms
        ):
            out.append(self._speculate(self.voice_end, quiet=True))
        elif self._quiet_frames == 0:  # a loud speech frame (so not a silent one either)
            out.extend(self._maybe_partial())
        return out

    def feed_all(self, probabilities: Sequence[float]) -> list[Decision]:
        """:meth:`feed` for each probability in turn; every decision, in order."""
        return [d for p in probabilities for d in self.feed(p)]

    def flush(self) -> list[Decision]:
        """Finalize now (push-to-talk released): the endpoint, or ``NoSpeech`` when nothing was said."""
        out: list[Decision] = []
        if self.phase is Phase.SPEAKING:
            out.extend(self._close(EndReason.FLUSH))
        else:
            if not self._heard_since_flush:
                out.append(NoSpeech())
            if self.phase is Phase.PENDING:
                out.extend(self._close(EndReason.FLUSH))
        self._heard_since_flush = False
        return out

    # -- feedback from the stream ---------------------------------------------------------------
    def speculation_refused(self) -> None:
        """The speculative decode could not be queued (or, started by the quiet rule, would have
        waited); it is tried again on the next quiet or silent frame."""
        self._speculation_end = None
        self._speculation_quiet = False

    def speculation_complete(self, speech_end: int) -> list[Decision]:
        """The speculative decode that ends at ``speech_end`` reads as a finished turn: the
        utterance may end after ``complete_silence_ms`` (if that speculation is still the current
        one, i.e. no speech came since). Ends it now when that much silence has passed already."""
        if self._speculation_end is None or self._speculation_end != speech_end:
            return []
        self._looks_complete = True
        if self._silence_frames * self.config.frame_ms >= self._silence_needed_ms():
            return self._close(EndReason.SILENCE)
        return []

    def partial_finished(self) -> None:
        """The partial decode asked for last is over (delivered, dropped or refused)."""
        self._partial_in_flight = False

    # -- internals ------------------------------------------------------------------------------
    def _silence_needed_ms(self) -> float:
        cfg = self.config
        if self._looks_complete and cfg.complete_silence_ms > 0 and self.phase is Phase.SPEAKING:
            return min(cfg.complete_silence_ms, cfg.min_silence_ms)
        return cfg.min_silence_ms

    def _final_end(self) -> int:
        return min(self.position, self.speech_end + self.config.tail_pad_samples)

    def _speculate(self, anchor: int, *, quiet: bool) -> SpeculationStarted:
        self._speculation_end = anchor
        self._speculation_quiet = quiet
        end = min(self.position, anchor + self.config.tail_pad_samples)
        return SpeculationStarted(self.start, end, anchor, quiet)

    def _maybe_partial(self) -> list[Decision]:
        if self._partial_in_flight:
            return []
        length = self.position - self.start
        if length - self._last_partial_len < self.config.partial_interval_ms * self.config.sample_rate / 1000:
            return []
        self._last_partial_len = length
        self._partial_in_flight = True
        return [PartialDue(self.start, self.position)]

    def _cancel(self, reason: CancelReason) -> SpeculationCancelled:
        if reason is CancelReason.SPEECH_RESUMED:
            # the stream delivers its result as a partial: the next partial is due after more audio
            self._last_partial_len = self.position - self.start
        self._speculation_end = None
        self._speculation_quiet = False
        self._looks_complete = False
        return SpeculationCancelled(reason)

    def _close(self, reason: EndReason) -> list[Decision]:
        out: list[Decision] = []
        if self.phase is Phase.SPEAKING:
            # a running speculation is still valid: speech after its anchor would have cancelled it
            use = self._speculation_end is not None
            self._speculation_end = None
            self._speculation_quiet = False
            self._looks_complete = False
            out.append(Endpoint(self.start, self._final_end(), self.speech_end, reason, use))
        elif self._speculation_end is not None:
            out.append(self._cancel(CancelReason.UTTERANCE_CLOSED))
        self.phase = Phase.IDLE
        self._speech_frames = self._silence_frames = self._quiet_frames = 0
        self._quiet_spent = False
        self._last_partial_len = 0
        self._idle_frames = 0
        out.append(UtteranceClosed())
        return out


#: Words after which a speaker is usually not done, whatever the punctuation (lower case).
_TRAILING = frozenset(
    "and but or so because um uh er erm hmm like the a an to of with that if then which".split()
)
#: Sentence-final marks, also the ideographic full stop and the full-width ? and ! of Chinese text.
_FINAL_MARKS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")


def looks_complete(text: str) -> bool:
    """Do these words read as a finished turn? Whisper punctuates: a final mark, not an ellipsis,
    and no trailing conjunction or filler (docs/adr/0014-voice-latency.md, the turn detector)."""
    words = text.strip()
    if not words.endswith(_FINAL_MARKS) or words.endswith(("...", "…")):
        return False
    last = words.rstrip("".join(_FINAL_MARKS) + " ").split()
    return bool(last) and last[-1].lower().strip(",;:\"'") not in _TRAILING
