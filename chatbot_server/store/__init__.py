"""Conversation storage: the log of frames and who owns each conversation (memory, Redis), and the handoff queue."""

from .base import ConversationStore, FrameLog, Ownership, StoredFrame, new_conversation_id
from .memory import MemoryConversationStore

__all__ = [
    "ConversationStore",
    "FrameLog",
    "MemoryConversationStore",
    "Ownership",
    "StoredFrame",
    "new_conversation_id",
]
