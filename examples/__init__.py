"""Runnable examples for chatbot_server (see docs/consumers.md)."""
