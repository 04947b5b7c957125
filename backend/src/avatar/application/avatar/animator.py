"""Follows the avatar events and gives every parameter's value at any moment: what a renderer
that drives a model frame by frame needs (the VTube Studio bridge uses it; the web avatar does
the same in TypeScript; docs/avatar-control.md describes the rules).

- Mouth: each chunk's frames play in real time from when the chunk would start playing (right
  after the previous chunk, or on arrival after a gap), like the client's audio queue;
  ``interrupted`` drops the turn's frames and closes the mouth at once.
- Expression and idle targets: linear interpolation from the current value over
  ``transition_ms``. Idle head/gaze values add to the expression's head values.
- Values are clamped to each parameter's range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avatar.application.avatar.events import (
    AvatarEvent,
    ExpressionEvent,
    IdleEvent,
    InterruptedEvent,
    MouthEvent,
    StateEvent,
)
from avatar.application.avatar.parameters import PARAMETERS, VOWEL_PARAMETERS, clamp


@dataclass
class _Tween:
    start: dict[str, float]
    target: dict[str, float]
    t0: float
    duration_s: float

    def at(self, now: float) -> dict[str, float]:
        if self.duration_s <= 0:
            return dict(self.target)
        k = min(1.0, max(0.0, (now - self.t0) / self.duration_s))
        return {
            name: self.start.get(name, PARAMETERS[name].default) * (1 - k) + value * k
            for name, value in self.target.items()
        }


@dataclass
class _Frame:
    at: float
    open: float
    vowel: str | None
    turn_id: str


@dataclass
class AvatarAnimator:
    """Parameter values over time from a stream of avatar events (times in seconds, monotonic)."""

    playback_delay_s: float = 0.0
    state: str = "listening"
    frames: list[_Frame] = field(default_factory=list)
    _queue_end: float = 0.0
    _expression: _Tween | None = None
    _idle: _Tween | None = None
    _frame_s: float = 0.02
    hotkeys: list[str] = field(default_factory=list)

    def apply(self, event: AvatarEvent, now: float) -> None:
        if isinstance(event, StateEvent):
            self.state = event.state
        elif isinstance(event, MouthEvent):
            self._frame_s = event.frame_ms / 1000.0
            start = max(now + self.playback_delay_s, self._queue_end)
            for frame in event.frames:
                self.frames.append(
                    _Frame(start + frame.offset_ms / 1000.0, frame.open, frame.vowel, event.turn_id)
                )
            self._queue_end = start + event.duration_ms / 1000.0
        elif isinstance(event, InterruptedEvent):
            self.frames = [f for f in self.frames if f.turn_id != event.turn_id]
            self._queue_end = now
        elif isinstance(event, ExpressionEvent):
            current = self._expression.at(now) if self._expression else {}
            params = {k: v for k, v in event.parameters.items() if k in PARAMETERS}
            self._expression = _Tween(current, params, now, event.transition_ms / 1000.0)
            if event.hotkey:
                self.hotkeys.append(event.hotkey)
        elif isinstance(event, IdleEvent):
            current = self._idle.at(now) if self._idle else {}
            params = {k: v for k, v in event.parameters.items() if k in PARAMETERS}
            self._idle = _Tween(current, params, now, event.transition_ms / 1000.0)

    def speaking(self, now: float) -> bool:
        """Whether mouth frames are still playing or waiting."""
        return bool(self.frames) and self.frames[-1].at + self._frame_s > now

    def values(self, now: float) -> dict[str, float]:
        values = {name: spec.default for name, spec in PARAMETERS.items()}
        if self._expression is not None:
            values.update(self._expression.at(now))
        if self._idle is not None:
            for name, value in self._idle.at(now).items():
                values[name] = values.get(name, 0.0) + value
        # Drop frames that are over; the current frame is the last one that has started.
        while len(self.frames) > 1 and self.frames[1].at <= now:
            self.frames.pop(0)
        if self.frames and self.frames[0].at + self._frame_s <= now:
            self.frames.pop(0)
        current = self.frames[0] if self.frames and self.frames[0].at <= now else None
        values["AvatarMouthOpen"] = current.open if current else 0.0
        for vowel, name in VOWEL_PARAMETERS.items():
            values[name] = current.open if current and current.vowel == vowel else 0.0
        return {name: clamp(name, value) for name, value in values.items()}
