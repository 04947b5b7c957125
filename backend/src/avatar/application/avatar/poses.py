"""``config/avatar_poses.toml``: emotion -> target parameters (+ optional VTube Studio hotkey),
and the idle motion's ranges; validated at start with errors that name the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar.application.avatar.parameters import PARAMETERS
from avatar.domain.errors import AvatarError
from avatar.domain.models import Emotion

MIN_TRANSITION_S = 0.1
MAX_TRANSITION_S = 0.5


class PoseConfigError(AvatarError):
    """The pose mapping file is missing or wrong (the message names the key)."""

    code = "INVALID_POSE_CONFIG"


@dataclass(frozen=True, slots=True)
class EmotionPose:
    parameters: dict[str, float]
    transition_s: float
    hotkey: str | None = None


@dataclass(frozen=True, slots=True)
class IdleConfig:
    head_range_deg: float = 6.0
    eye_range: float = 0.5
    interval_s: tuple[float, float] = (1.5, 4.0)
    transition_s: float = 0.8
    return_steps: int = 3
    return_step_s: float = 0.15


@dataclass(frozen=True, slots=True)
class PoseConfig:
    emotions: dict[Emotion, EmotionPose]
    idle: IdleConfig = field(default_factory=IdleConfig)

    def pose(self, emotion: Emotion) -> EmotionPose:
        return self.emotions.get(emotion) or self.emotions.get(Emotion.NEUTRAL) or EmotionPose({}, 0.3)


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PoseConfigError(f"{where} must be a number, not {value!r}")
    return float(value)


def parse_pose_config(raw: dict[str, Any], source: str = "avatar_poses.toml") -> PoseConfig:
    unknown = set(raw) - {"emotions", "idle"}
    if unknown:
        raise PoseConfigError(f"{source}: unknown section(s) {sorted(unknown)}; use [emotions.*] and [idle]")
    emotions_raw = raw.get("emotions", {})
    if not isinstance(emotions_raw, dict):
        raise PoseConfigError(f"{source}: [emotions] must be a table of tables")
    emotions: dict[Emotion, EmotionPose] = {}
    valid = ", ".join(e.value for e in Emotion)
    for name, table in emotions_raw.items():
        where = f"{source}: [emotions.{name}]"
        try:
            emotion = Emotion(name)
        except ValueError:
            raise PoseConfigError(f"{where}: unknown emotion (valid: {valid})") from None
        if not isinstance(table, dict):
            raise PoseConfigError(f"{where} must be a table")
        extra = set(table) - {"parameters", "transition_s", "hotkey"}
        if extra:
            raise PoseConfigError(f"{where}: unknown key(s) {sorted(extra)}")
        transition = _number(f"{where} transition_s", table.get("transition_s", 0.3))
        if not MIN_TRANSITION_S <= transition <= MAX_TRANSITION_S:
            raise PoseConfigError(
                f"{where} transition_s = {transition:g} is outside {MIN_TRANSITION_S}..{MAX_TRANSITION_S} s"
            )
        params_raw = table.get("parameters", {})
        if not isinstance(params_raw, dict):
            raise PoseConfigError(f"{where} parameters must be an inline table")
        params: dict[str, float] = {}
        for pname, value in params_raw.items():
            spec = PARAMETERS.get(pname)
            if spec is None:
                raise PoseConfigError(
                    f"{where} parameters: unknown parameter {pname!r} (valid: {', '.join(PARAMETERS)})"
                )
            number = _number(f"{where} parameters.{pname}", value)
            if not spec.min <= number <= spec.max:
                raise PoseConfigError(
                    f"{where} parameters.{pname} = {number:g} is outside its range {spec.min:g}..{spec.max:g}"
                )
            params[pname] = number
        hotkey = table.get("hotkey")
        if hotkey is not None and (not isinstance(hotkey, str) or not hotkey.strip()):
            raise PoseConfigError(f"{where} hotkey must be a non-empty string")
        emotions[emotion] = EmotionPose(params, transition, hotkey)
    return PoseConfig(emotions, _parse_idle(raw.get("idle", {}), source))


def _parse_idle(raw: Any, source: str) -> IdleConfig:
    where = f"{source}: [idle]"
    if not isinstance(raw, dict):
        raise PoseConfigError(f"{where} must be a table")
    default = IdleConfig()
    extra = set(raw) - set(IdleConfig.__dataclass_fields__)
    if extra:
        raise PoseConfigError(f"{where}: unknown key(s) {sorted(extra)}")
    head = _number(f"{where} head_range_deg", raw.get("head_range_deg", default.head_range_deg))
    eye = _number(f"{where} eye_range", raw.get("eye_range", default.eye_range))
    if not 0 <= head <= PARAMETERS["AvatarHeadX"].max:
        raise PoseConfigError(f"{where} head_range_deg = {head:g} must be within 0..30")
    if not 0 <= eye <= 1:
        raise PoseConfigError(f"{where} eye_range = {eye:g} must be within 0..1")
    interval = raw.get("interval_s", list(default.interval_s))
    if not isinstance(interval, list) or len(interval) != 2:
        raise PoseConfigError(f"{where} interval_s must be [min, max] in seconds")
    lo, hi = (_number(f"{where} interval_s", v) for v in interval)
    if not 0.2 <= lo <= hi:
        raise PoseConfigError(f"{where} interval_s = [{lo:g}, {hi:g}] needs 0.2 <= min <= max")
    transition = _number(f"{where} transition_s", raw.get("transition_s", default.transition_s))
    steps = raw.get("return_steps", default.return_steps)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10:
        raise PoseConfigError(f"{where} return_steps must be an integer 1..10")
    step_s = _number(f"{where} return_step_s", raw.get("return_step_s", default.return_step_s))
    if not 0 < transition <= 5 or not 0 < step_s <= 1:
        raise PoseConfigError(f"{where} transition_s must be in (0, 5] and return_step_s in (0, 1]")
    return IdleConfig(head, eye, (lo, hi), transition, steps, step_s)


def load_pose_config(path: Path) -> PoseConfig:
    """Read and validate the mapping file (``PoseConfigError`` names what is wrong)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PoseConfigError(f"cannot read the pose mapping {path}: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PoseConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_pose_config(raw, str(path))
