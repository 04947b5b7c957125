"""Avatar control: typed events that move any renderer (web SVG face, VTube Studio, Unity) with
the conversation: state, mouth openness and vowels tied to the reply audio, the reply's emotion as
an expression, and idle motion (docs/avatar-control.md)."""

from avatar.application.avatar.events import (
    AVATAR_EVENT,
    AVATAR_PROTOCOL_VERSION,
    AvatarEvent,
    ErrorEvent,
    ExpressionEvent,
    HelloEvent,
    IdleEvent,
    InterruptedEvent,
    MouthEvent,
    MouthFrame,
    ParameterSpec,
    StateEvent,
    Vowel,
)
from avatar.application.avatar.hub import AvatarHub, ConversationObserver, Subscription
from avatar.application.avatar.parameters import PARAMETERS, clamp
from avatar.application.avatar.poses import PoseConfig, PoseConfigError, load_pose_config

__all__ = [
    "AVATAR_EVENT",
    "AVATAR_PROTOCOL_VERSION",
    "PARAMETERS",
    "AvatarEvent",
    "AvatarHub",
    "ConversationObserver",
    "ErrorEvent",
    "ExpressionEvent",
    "HelloEvent",
    "IdleEvent",
    "InterruptedEvent",
    "MouthEvent",
    "MouthFrame",
    "ParameterSpec",
    "PoseConfig",
    "PoseConfigError",
    "StateEvent",
    "Subscription",
    "Vowel",
    "clamp",
    "load_pose_config",
]
