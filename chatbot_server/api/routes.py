"""Mount the HTTP API (docs/api.md) under /api/v1 of the chatbot (sub-)application."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from .guard import make_guard
from .tokens import TokenTable
from .views import get_transcript, post_broadcast, post_handoff, post_message

PREFIX = "/api/v1"


def setup_api(app: web.Application, settings: Settings) -> web.Application:
    """Add the API as a sub-application at /api/v1 of `app` and return it.

    A sub-application of its own, so that its middleware (the token check, the rate limits, JSON
    errors) runs for the API's requests only, never for the host site's pages. Called by
    app.setup() when `api.tokens` is not empty; without tokens /api/v1 is not routed at all.
    """
    tokens = TokenTable((token.name, token.token_hash) for token in settings.api.tokens)
    api = web.Application(
        middlewares=[make_guard(tokens, settings.api.rate_per_minute, settings.server.trusted_proxies)]
    )
    router = api.router
    router.add_post("/messages", post_message, name="api_messages")
    router.add_post("/broadcast", post_broadcast, name="api_broadcast")
    router.add_get("/conversations/{conversation}/transcript", get_transcript, name="api_conversation_transcript")
    router.add_get("/customers/{customer}/transcript", get_transcript, name="api_customer_transcript")
    router.add_post("/conversations/{conversation}/handoff", post_handoff, name="api_conversation_handoff")
    router.add_post("/customers/{customer}/handoff", post_handoff, name="api_customer_handoff")
    app.add_subapp(PREFIX, api)
    return api
