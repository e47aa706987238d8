"""The chat: the customer's socket (consumer.py), composed of the conversation it holds
(holding.py), the bot turn (turns.py) and who answers (handoff.py)."""

from .consumer import ChatConsumer

__all__ = ["ChatConsumer"]
