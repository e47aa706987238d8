"""Application keys and layer group names of the agents feature."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..keys import QUEUE_KEY
from ..messages import AGENTS_GROUP, QUEUE_GROUP, watch_group

if TYPE_CHECKING:
    from .directory import AgentDirectory

__all__ = ["AGENTS_GROUP", "DIRECTORY_KEY", "QUEUE_GROUP", "QUEUE_KEY", "watch_group"]

DIRECTORY_KEY: web.AppKey[AgentDirectory] = web.AppKey("chatbot_server.agents.directory")
