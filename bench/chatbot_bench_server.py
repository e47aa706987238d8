"""chatbot_server mounted with setup(), plus a bench-only POST /bench/broadcast (fan-out scenario).

The route calls get_layer(app).group_send("users", {"type": "chat.broadcast", "text": ...}), which
is how a host site broadcasts a notice; every chat socket then gets one system frame. Bench only:
the route has no authentication.

    python bench/chatbot_bench_server.py --config /tmp/bench.yaml --port 8082
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

import chatbot_server
from chatbot_server.cli import serve
from chatbot_server.ops.logs import configure_logging


async def broadcast(request: web.Request) -> web.Response:
    """Send one chat.broadcast to group "users" through the channel layer."""
    text = str((await request.json()).get("text", ""))
    await chatbot_server.get_layer(request.app).group_send("users", {"type": "chat.broadcast", "text": text})
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    # As python -m chatbot_server serves (cli.serve: the transport guard in front of aiohttp), or
    # with --plain through web.run_app, to measure what the guard costs.
    parser.add_argument("--plain", action="store_true", help="web.run_app, without the transport guard")
    args = parser.parse_args()
    settings = chatbot_server.load_settings(args.config, overrides={"server.host": args.host, "server.port": args.port})
    configure_logging(settings.logging.level, settings.logging.format)
    app = web.Application(client_max_size=64 * 1024)
    chatbot_server.setup(app, settings)
    app.router.add_post("/bench/broadcast", broadcast)
    if args.plain:
        web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    else:
        asyncio.run(serve(app, settings))


if __name__ == "__main__":
    main()
