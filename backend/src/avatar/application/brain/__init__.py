"""The conversation brain: persona, emotion, history with summaries, long-term memory."""

from avatar.application.brain.conversation import (
    BrainConfig,
    BrainDeps,
    BrainEvent,
    ConversationBrain,
    EmotionDecided,
    HistoryFold,
    HistoryTurn,
    ModelStarted,
    ReplyEnded,
    TextDelta,
)
from avatar.application.brain.memory import MemorySearch
from avatar.application.brain.persona import (
    Persona,
    PersonaExample,
    detect_language,
    load_persona,
    parse_persona,
)
from avatar.application.brain.reply_parser import ReplyParser, guess_emotion, strip_markup

__all__ = [
    "BrainConfig",
    "BrainDeps",
    "BrainEvent",
    "ConversationBrain",
    "EmotionDecided",
    "HistoryFold",
    "HistoryTurn",
    "MemorySearch",
    "ModelStarted",
    "Persona",
    "PersonaExample",
    "ReplyEnded",
    "ReplyParser",
    "TextDelta",
    "detect_language",
    "guess_emotion",
    "load_persona",
    "parse_persona",
    "strip_markup",
]
