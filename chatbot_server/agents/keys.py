"""Application keys of the agents feature."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .directory import AgentDirectory
    from .queue import HandoffQueue

QUEUE_KEY: web.AppKey[HandoffQueue] = web.AppKey("chatbot_server.agents.queue")
DIRECTORY_KEY: web.AppKey[AgentDirectory] = web.AppKey("chatbot_server.agents.directory")

# Layer groups: every agent console; every user waiting in the queue; the consoles on one conversation.
AGENTS_GROUP = "agents"
QUEUE_GROUP = "handoff.queue"


def watch_group(conversation: str) -> str:
    """The group of the agent consoles following a conversation."""
    return f"watch.{conversation}"
