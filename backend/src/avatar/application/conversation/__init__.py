"""The realtime conversation: per-session pipeline, session manager, HQ pass, background writes."""

from avatar.application.brain import EmotionDecided, ReplyEnded, TextDelta
from avatar.application.conversation.brain_engine import BrainReplyEngine
from avatar.application.conversation.context import SessionContext
from avatar.application.conversation.deps import ConversationConfig, ConversationDeps
from avatar.application.conversation.events import Phase, ServerMessage
from avatar.application.conversation.hq import make_hq_handler
from avatar.application.conversation.manager import SessionManager
from avatar.application.conversation.metrics import STAGES, ConversationMetrics, NullMetrics
from avatar.application.conversation.outbox import Outbox
from avatar.application.conversation.playout import Clause, Playout
from avatar.application.conversation.ports import ReplyEngine, ReplyEvent, TextChunker, VoiceResolver
from avatar.application.conversation.recorder import TurnRecorder
from avatar.application.conversation.records import SessionEndedError, SessionRecords
from avatar.application.conversation.reply import Reply, ReplyState
from avatar.application.conversation.session import ConversationSession, transcription_id_for
from avatar.application.conversation.tokens import TokenError, issue_token, verify_token
from avatar.application.conversation.writer import BackgroundWriter
from avatar.application.tasks import HQ_TOPIC, PROSODY_TOPIC, HQTask, ProsodyTask

__all__ = [
    "HQ_TOPIC",
    "PROSODY_TOPIC",
    "STAGES",
    "BackgroundWriter",
    "BrainReplyEngine",
    "Clause",
    "ConversationConfig",
    "ConversationDeps",
    "ConversationMetrics",
    "ConversationSession",
    "EmotionDecided",
    "HQTask",
    "NullMetrics",
    "Outbox",
    "Phase",
    "Playout",
    "ProsodyTask",
    "Reply",
    "ReplyEnded",
    "ReplyEngine",
    "ReplyEvent",
    "ReplyState",
    "ServerMessage",
    "SessionContext",
    "SessionEndedError",
    "SessionManager",
    "SessionRecords",
    "TextChunker",
    "TextDelta",
    "TokenError",
    "TurnRecorder",
    "VoiceResolver",
    "issue_token",
    "make_hq_handler",
    "transcription_id_for",
    "verify_token",
]
