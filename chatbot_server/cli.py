"""Command line: python -m chatbot_server [--config F] [--host H] [--port P] [--check-config]."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .app import build_layer, create_app
from .bots import BotContext, build_bot
from .config import ENV_OVERRIDES, Settings, load_settings
from .errors import ConfigError, LayerUnavailableError
from .ops.logs import configure_logging
from .version import __version__

log = logging.getLogger("chatbot_server")

EXIT_CONFIG_ERROR = 2
EXIT_UNAVAILABLE = 1

_EPILOG = (
    """\
Settings come from the built-in defaults, then the YAML file (--config or $CHATBOT_CONFIG), then
environment variables, then these flags. Environment overrides:
"""
    + "\n".join(f"  {var:<22} {key}" for var, key in ENV_OVERRIDES.items())
    + """

Without a config file the server runs on the in-memory channel layer with the FAQ bot at
http://127.0.0.1:8080/. Every key is described in docs/configuration.md (and in config.yaml in
the source repository). Exit codes: 0 ok, 1 cannot start (port taken, Redis required but
unreachable), 2 bad configuration.
"""
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also documents every option in --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m chatbot_server",
        description="Real-time customer-service chatbot server (aiohttp, websockets, channel layers).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file (default: $CHATBOT_CONFIG or none)")
    parser.add_argument("--host", help="interface to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="TCP port to listen on (overrides server.port)")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config (and the bot's knowledge base), print a summary and exit 0, or 2 on errors",
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides logging.level")
    parser.add_argument("--log-format", choices=["text", "json"], help="overrides logging.format")
    parser.add_argument("--version", action="version", version=f"chatbot_server {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = args.port
    if args.log_level is not None:
        overrides["logging.level"] = args.log_level
    if args.log_format is not None:
        overrides["logging.format"] = args.log_format
    config_path = args.config or os.environ.get("CHATBOT_CONFIG") or None
    try:
        settings = load_settings(config_path, overrides=overrides)
        if args.check_config:
            summary = asyncio.run(check(settings))
            print(f"config OK: {config_path or '(built-in defaults)'}")
            print(summary)
            return 0
        app = create_app(settings, handle_signals=True)
    except ConfigError as exc:
        if not exc.source and config_path:
            exc = ConfigError(str(exc).removeprefix(f"{exc.key}: "), key=exc.key, source=config_path)
        print(f"chatbot_server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    configure_logging(settings.logging.level, settings.logging.format)
    _use_uvloop_if_installed()
    log.info(
        "start host=%s port=%d layer=%s bot=%s",
        settings.server.host,
        settings.server.port,
        settings.layer.backend,
        settings.bot.name,
    )
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.shutdown_timeout,
            print=lambda _: log.info("listening url=http://%s:%d/", settings.server.host, settings.server.port),
            access_log=None,
        )
    except LayerUnavailableError as exc:
        print(f"chatbot_server: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:  # e.g. the port is taken
        print(f"chatbot_server: cannot listen on {settings.server.host}:{settings.server.port}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


async def check(settings: Settings) -> str:
    """Build layer and bot from settings and validate the bot's files, without serving."""
    build_layer(settings.layer)
    bot = build_bot(settings.bot.name, settings.bot.options, BotContext(base_dir=settings.base_dir))
    await bot.check()
    return (
        f"  server  {settings.server.host}:{settings.server.port}\n"
        f"  layer   {settings.layer.backend}\n"
        f"  bot     {settings.bot.name} ({type(bot).__name__})"
    )


def _use_uvloop_if_installed() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return
    uvloop.install()
