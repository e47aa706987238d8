"""Every typed application key chatbot_server stores on an aiohttp Application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from jinja2 import Environment

    from .agents.directory import AgentDirectory
    from .agents.routing import Router
    from .bots import Bot
    from .chat.budgets import ClientBudgets
    from .chat.holding import Holders
    from .chat.identity import IdentityGate
    from .chat.turns import TurnRunner
    from .chat.unanswered import UnansweredNotes
    from .config import Settings
    from .hours import Availability
    from .layers import ChannelLayer
    from .sockets.registry import ConnectionRegistry
    from .store.base import ConversationStore
    from .store.customers import CustomerDirectory
    from .store.handoff import HandoffQueue
    from .store.left_messages import LeftMessages
    from .store.ratings import RatingStore
    from .store.unanswered import UnansweredStore

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("chatbot_server.settings")
LAYER_KEY: web.AppKey[ChannelLayer] = web.AppKey("chatbot_server.layer")
BOT_KEY: web.AppKey[Bot] = web.AppKey("chatbot_server.bot")
STORE_KEY: web.AppKey[ConversationStore] = web.AppKey("chatbot_server.store")
CONNECTIONS_KEY: web.AppKey[ConnectionRegistry] = web.AppKey("chatbot_server.connections")
# The handoff queue, set by app.setup() when agents are configured (the chat works without it).
QUEUE_KEY: web.AppKey[HandoffQueue] = web.AppKey("chatbot_server.agents.queue")
# The bot's turn runner (how it answers, decided once) and the conversations this process holds.
TURNS_KEY: web.AppKey[TurnRunner] = web.AppKey("chatbot_server.turns")
HOLDERS_KEY: web.AppKey[Holders] = web.AppKey("chatbot_server.holders")
# What each client address may still replay and store (limits.replay_per_ip, history.quota_per_ip).
BUDGETS_KEY: web.AppKey[ClientBudgets] = web.AppKey("chatbot_server.budgets")
# Business hours and whether anyone is online (hours.py), and messages left outside them: set by
# setup_agents() when agents are configured.
AVAILABILITY_KEY: web.AppKey[Availability] = web.AppKey("chatbot_server.agents.availability")
LEFT_MESSAGES_KEY: web.AppKey[LeftMessages] = web.AppKey("chatbot_server.agents.left_messages")
# The agents' accounts and sessions, set by app.setup() when agents are configured.
DIRECTORY_KEY: web.AppKey[AgentDirectory] = web.AppKey("chatbot_server.agents.directory")
# Presence, capacity and assignment of agents (agents/routing.py), set with DIRECTORY_KEY.
ROUTER_KEY: web.AppKey[Router] = web.AppKey("chatbot_server.agents.router")
# Verified customers and their conversations (identity.py); always set by app.setup().
CUSTOMERS_KEY: web.AppKey[CustomerDirectory] = web.AppKey("chatbot_server.customers")
# The identity gate (chat/identity.py), set by app.setup() only when identity.secret is set.
IDENTITY_KEY: web.AppKey[IdentityGate] = web.AppKey("chatbot_server.identity")
# Our own Jinja environment, never the host application's default one.
TEMPLATES_KEY: web.AppKey[Environment] = web.AppKey("chatbot_server.templates")
# Ratings after a human chat and the bot's unanswered questions, set with the agents (agents/feedback.py).
RATINGS_KEY: web.AppKey[RatingStore] = web.AppKey("chatbot_server.agents.ratings")
UNANSWERED_KEY: web.AppKey[UnansweredStore] = web.AppKey("chatbot_server.agents.unanswered")
NOTES_KEY: web.AppKey[UnansweredNotes] = web.AppKey("chatbot_server.unanswered_notes")
