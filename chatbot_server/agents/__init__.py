"""Handoff to human agents: the queue, agent accounts and sessions, the agent socket and console.

Mounted by chatbot_server.app.setup() through `routes.setup_agents`; see docs/agents.md.
"""
