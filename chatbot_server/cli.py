"""Command line: python -m chatbot_server [--config F] [--host H] [--port P] [--workers N] [--check-config]."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .app import build_layer, create_app
from .bots import BotContext, build_bot
from .config import ENV_OVERRIDES, Settings, check_workers, load_settings
from .errors import ConfigError, LayerUnavailableError
from .keys import BOT_KEY, CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY, STORE_KEY
from .ops.guard import AcceptErrorLog, ConnectionGuard, fd_budget, raise_fd_limit
from .ops.logs import configure_logging
from .ops.metrics import GuardStats
from .ops.views import healthz, metrics
from .version import __version__
from .workers import Worker, supervise

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
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the port together, supervised (overrides server.workers; docs/deployment.md)",
    )
    parser.add_argument(
        "--worker-index",
        type=int,
        metavar="I",
        help="serve as worker I of a group sharing the port (SO_REUSEPORT, monitoring.port + I); "
        "set by the supervisor, or by a systemd template unit",
    )
    parser.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)  # the supervisor's link
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
    if args.workers is not None:
        overrides["server.workers"] = args.workers
    if args.log_level is not None:
        overrides["logging.level"] = args.log_level
    if args.log_format is not None:
        overrides["logging.format"] = args.log_format
    config_path = args.config or os.environ.get("CHATBOT_CONFIG") or None
    worker = None if args.worker_index is None else Worker(args.worker_index, args.supervisor_fd)
    if args.supervisor_fd is not None:
        # A SIGHUP to the whole process group (a terminal's hangup, `kill -HUP -PGID`) is the
        # supervisor's to act on; it must not kill a worker before its app handles SIGHUP.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        settings = _load(config_path, overrides)
        if worker is not None and args.supervisor_fd is None:
            # Run by hand as one of a group (a systemd template unit): the same rules as --workers.
            check_workers(settings, max(2, worker.index + 1), source="command line --worker-index")
        if args.check_config:
            summary = asyncio.run(check(settings))
            print(f"config OK: {config_path or '(built-in defaults)'}")
            print(summary)
            return 0
        # Before the app is built: its start-up warnings come out in the chosen format too.
        configure_logging(settings.logging.level, settings.logging.format)
        if worker is None and settings.server.workers > 1:
            return supervise(sys.argv[1:] if argv is None else argv, settings, lambda: _load(config_path, overrides))
        if worker is not None:
            worker.tag_logs()
        app = create_app(settings, handle_signals=True, monitoring_routes=not settings.monitoring.port)
    except ConfigError as exc:
        print(f"chatbot_server: configuration error: {_named(exc, config_path)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    _use_uvloop_if_installed()
    soft, hard = raise_fd_limit()
    log.info(
        "start host=%s port=%d layer=%s bot=%s fd_limit=%d/%d pid=%d",
        settings.server.host,
        settings.server.port,
        settings.layer.backend,
        settings.bot.name,
        soft,
        hard,
        os.getpid(),
    )
    try:
        asyncio.run(serve(app, settings, worker=worker))
    except LayerUnavailableError as exc:
        print(f"chatbot_server: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:  # e.g. the port is taken
        print(f"chatbot_server: cannot listen on {settings.server.host}:{settings.server.port}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        if worker is not None:
            worker.close()
    return 0


def _load(config_path: str | None, overrides: dict[str, Any]) -> Settings:
    """The settings (also re-read by the supervisor on SIGHUP); a ConfigError names the file."""
    try:
        return load_settings(config_path, overrides=overrides)
    except ConfigError as exc:
        raise _named(exc, config_path) from None


def _named(exc: ConfigError, config_path: str | None) -> ConfigError:
    """`exc` naming the config file when it names no source (errors of the bot or the layer)."""
    if not exc.source and config_path:
        return ConfigError(str(exc).removeprefix(f"{exc.key}: "), key=exc.key, source=config_path)
    return exc


async def serve(app: web.Application, settings: Settings, *, worker: Worker | None = None) -> None:
    """Serve until SIGTERM/SIGINT, every connection behind the transport guard (ops/guard.py).

    Not web.run_app: it offers no way to wrap the protocol factory, and the guard must see each
    connection before aiohttp does (aiohttp has no deadline for a first request head). As one of
    several workers (`worker`), the listening socket is made with SO_REUSEPORT: the kernel spreads
    new connections over the workers; the worker also stops when its supervisor is gone.
    """
    loop = asyncio.get_running_loop()
    stats = GuardStats()
    loop.set_exception_handler(AcceptErrorLog(stats))
    server_settings = settings.server
    runner = web.AppRunner(
        app,
        # SIGTERM/SIGINT set an event rather than raise GracefulExit out of a signal callback, so
        # the shutdown below runs in order, in this task.
        handle_signals=False,
        access_log=None,
        keepalive_timeout=server_settings.keepalive_timeout,
        shutdown_timeout=server_settings.shutdown_timeout,
    )
    await runner.setup()
    monitor: web.AppRunner | None = None
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if worker is not None:
        worker.watch(stop)
    server: asyncio.Server | None = None
    try:
        assert runner.server is not None  # set by setup(); web.Server is aiohttp's protocol factory
        guard = ConnectionGuard(
            runner.server,
            handshake_timeout=server_settings.handshake_timeout,
            max_unfinished_per_ip=server_settings.max_unfinished_per_ip,
            # Descriptors the process needs besides connections: what is open now, the Redis pool.
            fd_budget=fd_budget(reserve=server_settings.fd_reserve, extra=settings.layer.redis.pool_size + 2),
            trusted_proxies=server_settings.trusted_proxies,
            stats=stats,
        )
        app[CONNECTIONS_KEY].stats.registry.register(stats.collector(lambda: guard.open))
        server = await loop.create_server(
            guard, server_settings.host, server_settings.port, reuse_address=True, reuse_port=worker is not None
        )
        if settings.monitoring.port:
            monitor = await _serve_monitoring(app, settings, worker)
        # The layer's process id (in its channel names and Redis keys) after it started: on a Redis
        # Cluster the layer picks it then (layers/redis_placement.py).
        url = f"http://{server_settings.host}:{server_settings.port}/"
        log.info("listening url=%s pid=%d process=%s", url, os.getpid(), app[LAYER_KEY].process_id)
        if worker is not None:
            worker.ready()
        await stop.wait()
        log.info("stop shed=%s accept_errors=%d", dict(stats.shed), stats.accept_errors)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if server is not None:
            server.close()  # stop accepting; runner.cleanup() below ends the open connections
        if monitor is not None:
            await monitor.cleanup()
        await runner.cleanup()
        if server is not None:
            # Python 3.12+ waits here for every connection; they are closed by now.
            await asyncio.wait_for(server.wait_closed(), timeout=max(1.0, server_settings.shutdown_timeout))


async def _serve_monitoring(app: web.Application, settings: Settings, worker: Worker | None) -> web.AppRunner:
    """/healthz and /metrics on a listener of their own (monitoring.host:port), off the public port.

    Worker i listens on monitoring.port + i (its own metrics); with SO_REUSEPORT, so that the
    worker replacing it on SIGHUP can listen before the old one has gone.
    """
    monitor = web.Application()
    # The handlers read the chat app's state.
    monitor[SETTINGS_KEY] = app[SETTINGS_KEY]
    monitor[LAYER_KEY] = app[LAYER_KEY]
    monitor[STORE_KEY] = app[STORE_KEY]
    monitor[BOT_KEY] = app[BOT_KEY]
    monitor[CONNECTIONS_KEY] = app[CONNECTIONS_KEY]
    monitor.router.add_get("/healthz", healthz)
    monitor.router.add_get("/metrics", metrics)
    runner = web.AppRunner(monitor, handle_signals=False, access_log=None)
    await runner.setup()
    port = settings.monitoring.port if worker is None else worker.monitoring_port(settings.monitoring.port)
    await web.TCPSite(runner, settings.monitoring.host, port, reuse_port=worker is not None).start()
    log.info("monitoring url=http://%s:%d/healthz", settings.monitoring.host, port)
    return runner


async def check(settings: Settings) -> str:
    """Build layer and bot from settings and validate the bot's files, without serving."""
    build_layer(settings.layer)
    agents = settings.agents.enabled and bool(settings.agents.accounts)
    bot = build_bot(settings.bot.name, settings.bot.options, BotContext(base_dir=settings.base_dir, agents=agents))
    await bot.check()
    workers = f" ({settings.server.workers} workers)" if settings.server.workers > 1 else ""
    return (
        f"  server  {settings.server.host}:{settings.server.port}{workers}\n"
        f"  layer   {settings.layer.backend}\n"
        f"  bot     {settings.bot.name} ({type(bot).__name__})"
    )


def _use_uvloop_if_installed() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return
    uvloop.install()
