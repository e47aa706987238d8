"""The floor: a plain aiohttp websocket server with the seed's echo behaviour and a broadcast route.

It does what chatbot_server does on the benchmarked paths and nothing more: a greeting frame on
connect, {"msg": "我正在思考你的问题{...}", "talk": true} per text frame, and POST /bench/broadcast
sends one frame to every open socket. Written the way a plain aiohttp user would (stdlib json, a set
of sockets, no channel layer), so the ratios in bench/run.py say what the abstractions cost.

    python bench/raw_server.py --port 8081
"""

from __future__ import annotations

import argparse
import json

from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", set)
GREETING = json.dumps({"msg": "你好,很高兴为你服务。", "talk": False}, ensure_ascii=False)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    """Greet, answer each text frame, and stay in the broadcast set while open."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        await ws.send_str(GREETING)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                try:
                    text = json.loads(msg.data).get("text", "")
                except (ValueError, AttributeError):
                    continue
                await ws.send_str(
                    json.dumps({"msg": f"我正在思考你的问题{{{text}}}", "talk": True}, ensure_ascii=False)
                )
    finally:
        sockets.discard(ws)
    return ws


async def broadcast(request: web.Request) -> web.Response:
    """Send {"msg": text, "talk": false} to every open socket."""
    text = (await request.json()).get("text", "")
    payload = json.dumps({"type": "system", "msg": text, "talk": False}, ensure_ascii=False)
    for ws in list(request.app[SOCKETS]):
        if not ws.closed:
            try:
                await ws.send_str(payload)
            except ConnectionError:
                pass
    return web.Response(text="ok")


def make_app() -> web.Application:
    """The raw aiohttp application."""
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/bench/broadcast", broadcast)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
