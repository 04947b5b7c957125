"""The realtime conversation: per-session pipeline, session manager, HQ pass, background writes."""

from avatar.application.conversation.brain_engine import BrainReplyEngine
from avatar.application.conversation.hq import make_hq_handler
from avatar.application.conversation.manager import SessionEndedError, SessionManager
from avatar.application.conversation.metrics import STAGES, ConversationMetrics, NullMetrics
from avatar.application.conversation.ports import (
    ReplyEmotion,
    ReplyEngine,
    ReplyEvent,
    ReplyText,
    TextChunker,
    VoiceResolver,
)
from avatar.application.conversation.session import (
    ConversationConfig,
    ConversationDeps,
    ConversationSession,
    Outbox,
    Phase,
    transcription_id_for,
)
from avatar.application.conversation.tokens import TokenError, issue_token, verify_token
from avatar.application.conversation.writer import BackgroundWriter
from avatar.application.tasks import HQ_TOPIC, PROSODY_TOPIC, HQTask, ProsodyTask

__all__ = [
    "HQ_TOPIC",
    "PROSODY_TOPIC",
    "STAGES",
    "BackgroundWriter",
    "BrainReplyEngine",
    "ConversationConfig",
    "ConversationDeps",
    "ConversationMetrics",
    "ConversationSession",
    "HQTask",
    "NullMetrics",
    "Outbox",
    "Phase",
    "ProsodyTask",
    "ReplyEmotion",
    "ReplyEngine",
    "ReplyEvent",
    "ReplyText",
    "SessionEndedError",
    "SessionManager",
    "TextChunker",
    "TokenError",
    "VoiceResolver",
    "issue_token",
    "make_hq_handler",
    "transcription_id_for",
    "verify_token",
]
