"""The app for gunicorn's aiohttp worker, configured as `python -m chatbot_server` is.

    CHATBOT_CONFIG=/etc/chatbot-server/config.yaml \\
        gunicorn chatbot_server.gunicorn_app:app --worker-class aiohttp.GunicornWebWorker \\
        --workers 4 --bind 127.0.0.1:8080

gunicorn listens, forks and supervises; each worker calls `app()`. What that leaves out (the
transport guard, monitoring.port, server.*): docs/deployment.md#workers.
"""

from __future__ import annotations

import os

from aiohttp import web

from .app import create_app
from .config import check_workers, load_settings
from .ops.logs import configure_logging
from .workers import tag_logs


async def app() -> web.Application:
    """The chat app from $CHATBOT_CONFIG and the environment overrides (a coroutine: gunicorn's factory).

    gunicorn runs several workers, so the rules of `server.workers` > 1 apply (a shared Redis
    layer and store); a ConfigError stops the worker, and gunicorn with it.
    """
    settings = load_settings(os.environ.get("CHATBOT_CONFIG") or None)
    check_workers(settings, 2, source="gunicorn")
    configure_logging(settings.logging.level, settings.logging.format)
    tag_logs(f"pid={os.getpid()}")  # gunicorn's workers have no index
    # The monitoring routes stay on the one port gunicorn binds; SIGHUP is gunicorn's (new workers).
    return create_app(settings)
