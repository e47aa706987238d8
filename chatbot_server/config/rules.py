"""Rules that span sections of the settings, checked after each section is read."""

from __future__ import annotations

import re

from ..errors import ConfigError
from ..hours import from_settings
from .canned import check_canned
from .model import Settings


def check_workers(settings: Settings, processes: int, *, source: str = "") -> None:
    """Refuse what cannot work with `processes` processes sharing server.port (docs/deployment.md#workers).

    The kernel hands each new connection to any of them, so everything a socket relies on must be
    shared: groups (the layer) and conversations (the store, and the handoff queue that follows
    it). A custom layer backend ("pkg.mod:Class") is trusted to be shared. Raises ConfigError.
    """
    if processes <= 1:
        return
    docs = "see docs/deployment.md#workers"
    if settings.layer.backend == "memory":
        raise ConfigError(
            f"{processes} workers need a shared channel layer, but layer.backend is memory: a group_send "
            f"on one worker would not reach sockets on the others; set layer.backend: redis, or run one worker "
            f"({docs})",
            key="server.workers",
            source=source,
        )
    history = settings.history.backend
    if history == "memory" or (history == "auto" and settings.layer.backend != "redis"):
        raise ConfigError(
            f"{processes} workers need conversations kept in Redis, but history.backend is {history}"
            f"{' (memory, as the layer)' if history == 'auto' else ''}: a page that reconnects to another "
            f"worker could not resume, nor would agents see the handoff queue of the others; set "
            f"history.backend: redis or auto ({docs})",
            key="server.workers",
            source=source,
        )
    if settings.server.port == 0:
        raise ConfigError(
            f"{processes} workers share one port: server.port 0 would give each its own; set a port ({docs})",
            key="server.workers",
            source=source,
        )
    monitoring = settings.monitoring.port
    if monitoring and not (
        monitoring + processes - 1 <= 65535 and not monitoring <= settings.server.port < monitoring + processes
    ):
        raise ConfigError(
            f"worker i serves /healthz and /metrics on monitoring.port + i: "
            f"{monitoring}..{monitoring + processes - 1} must be ports, and not server.port ({docs})",
            key="server.workers",
            source=source,
        )


def check_together(settings: Settings, *, source: str) -> None:
    """Rules that span sections."""
    agents = settings.agents
    shared = settings.layer.backend == "redis" or settings.history.backend == "redis"
    if agents.enabled and agents.accounts and shared and not agents.session_secret:
        # Several processes share the Redis: each would sign console cookies with its own random
        # secret, and a sign-in on one would be refused by the next (found in #14). Say so at start.
        raise ConfigError(
            "must be set when agents sign in and Redis is shared (every process must sign cookies alike); "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' "
            "and pass it as $CHATBOT_SESSION_SECRET",
            key="agents.session_secret",
            source=source,
        )
    try:
        from_settings(agents.hours)  # agents.hours: times, overlaps, time zone, dates
    except ConfigError as exc:
        raise ConfigError(str(exc).split(": ", 1)[-1], key=exc.key, source=source) from None
    if agents.session_secret and len(agents.session_secret) < 16:
        raise ConfigError("must be at least 16 characters", key="agents.session_secret", source=source)
    for n, account in enumerate(agents.accounts):
        if not 0 <= account.capacity <= 1000:
            raise ConfigError(
                "must be an integer 0..1000 (0: agents.capacity)", key=f"agents.accounts[{n}].capacity", source=source
            )
    identity = settings.identity
    if identity.secret and len(identity.secret) < 32:
        raise ConfigError(
            "must be at least 32 characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            key="identity.secret",
            source=source,
        )
    if identity.required and not identity.secret:
        raise ConfigError(
            "identity.required needs identity.secret (or $CHATBOT_IDENTITY_SECRET): without it no token can be "
            "verified and nobody could chat",
            key="identity.required",
            source=source,
        )
    if identity.max_token_ttl <= 0:
        raise ConfigError("must be positive", key="identity.max_token_ttl", source=source)
    for n, token in enumerate(settings.api.tokens):
        if not token.name or not re.fullmatch(r"sha256:[0-9a-f]{64}", token.token_hash):
            raise ConfigError(
                "each token needs a name and a token_hash of the form sha256:<64 hex digits> "
                "(python -m chatbot_server.api.tokens makes both)",
                key=f"api.tokens[{n}]",
                source=source,
            )
    check_canned(agents.canned, source=source)
    if settings.api.rate_per_minute < 1:
        raise ConfigError("must be at least 1", key="api.rate_per_minute", source=source)
