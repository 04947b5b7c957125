"""The avatar's parameter vocabulary: one name, range and default per controllable channel.

The same names are the keys of expression/idle events, the keys of ``config/avatar_poses.toml``
and the custom parameters the VTube Studio bridge creates (docs/avatar-control.md), so every
renderer maps one list once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    min: float
    max: float
    default: float
    explanation: str


def _p(name: str, lo: float, hi: float, default: float, explanation: str) -> Parameter:
    return Parameter(name, lo, hi, default, explanation)


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        _p("AvatarMouthOpen", 0.0, 1.0, 0.0, "Mouth openness from the reply audio (0 closed, 1 open)"),
        _p("AvatarVowelA", 0.0, 1.0, 0.0, "Vowel shape A while speaking"),
        _p("AvatarVowelI", 0.0, 1.0, 0.0, "Vowel shape I while speaking"),
        _p("AvatarVowelU", 0.0, 1.0, 0.0, "Vowel shape U while speaking"),
        _p("AvatarVowelE", 0.0, 1.0, 0.0, "Vowel shape E while speaking"),
        _p("AvatarVowelO", 0.0, 1.0, 0.0, "Vowel shape O while speaking"),
        _p("AvatarHeadX", -30.0, 30.0, 0.0, "Head turn left/right in degrees (idle motion, poses)"),
        _p("AvatarHeadY", -30.0, 30.0, 0.0, "Head tilt up/down in degrees (idle motion, poses)"),
        _p("AvatarHeadZ", -30.0, 30.0, 0.0, "Head roll in degrees (poses)"),
        _p("AvatarEyeX", -1.0, 1.0, 0.0, "Gaze left/right (idle motion)"),
        _p("AvatarEyeY", -1.0, 1.0, 0.0, "Gaze up/down (idle motion)"),
        _p("AvatarSmile", -1.0, 1.0, 0.0, "Mouth corners: -1 frown, 1 smile (emotion)"),
        _p("AvatarBrows", -1.0, 1.0, 0.0, "Brows: -1 lowered (angry), 1 raised (surprised)"),
        _p("AvatarEyeOpen", 0.0, 1.0, 1.0, "Eye openness (emotion)"),
    )
}

VOWEL_PARAMETERS = {
    "A": "AvatarVowelA",
    "I": "AvatarVowelI",
    "U": "AvatarVowelU",
    "E": "AvatarVowelE",
    "O": "AvatarVowelO",
}
HEAD_AND_EYES = ("AvatarHeadX", "AvatarHeadY", "AvatarHeadZ", "AvatarEyeX", "AvatarEyeY")


def clamp(name: str, value: float) -> float:
    """``value`` limited to the parameter's range (``KeyError`` for an unknown name)."""
    spec = PARAMETERS[name]
    return min(spec.max, max(spec.min, value))


def neutral_values() -> dict[str, float]:
    return {name: spec.default for name, spec in PARAMETERS.items()}
