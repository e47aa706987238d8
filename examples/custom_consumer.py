"""A custom WebsocketConsumer: a chat room on /ws2, plus an HTTP endpoint that posts into it.

python -m examples.custom_consumer --port 8080      (from the repository root)
# connect a websocket to ws://127.0.0.1:8080/ws2 and send text frames;
# curl -d '今晚 22:00 维护' http://127.0.0.1:8080/announce  reaches every open /ws2 socket.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, ClassVar

from aiohttp import web

import chatbot_server
from chatbot_server import WebsocketConsumer, get_layer, message_handler
from chatbot_server.layers import Message

log = logging.getLogger("examples.room")

ROOM = "room"


class RoomConsumer(WebsocketConsumer):
    """Every text a socket sends is relayed to all sockets in the room (the sender included)."""

    groups: ClassVar[tuple[str, ...]] = (ROOM,)  # joined on connect, left on disconnect
    channel_prefix: ClassVar[str] = "room"

    async def on_connect(self) -> None:
        await self.send_json({"type": "welcome", "you": self.connection_id})

    async def on_receive_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            await self.send_json({"type": "error", "code": "empty_text"})
            return
        if text == "/bye":
            await self.close(code=1000, message="bye")
            return
        # Through the layer, so members on other server processes get it too (redis backend).
        await self.layer.group_send(ROOM, {"type": "room.message", "sender": self.connection_id, "text": text[:500]})

    async def on_receive_bytes(self, data: bytes) -> None:
        await self.send_json({"type": "error", "code": "binary_not_supported"})

    async def on_disconnect(self, code: int | None) -> None:
        log.info("room.left conn=%s code=%s", self.connection_id, code)

    # Layer messages are dispatched by "type": "room.message" -> room_message(), marked as a handler.
    @message_handler
    async def room_message(self, message: Message) -> None:
        await self.send_json({"type": "message", "from": message["sender"], "text": message["text"]})


async def announce(request: web.Request) -> web.Response:
    """POST a plain-text body to broadcast it to the room and to every chat page (/ws)."""
    text = (await request.text()).strip()[:500]
    if not text:
        raise web.HTTPBadRequest(text="empty announcement")
    layer = get_layer(request.app)
    await layer.group_send(ROOM, {"type": "room.message", "sender": "server", "text": text})
    # The default ChatConsumer's sockets are all in group "users" and handle "chat.broadcast".
    await layer.group_send("users", {"type": "chat.broadcast", "text": text})
    return web.json_response({"sent": text})


def make_app(settings: chatbot_server.Settings | None = None, **setup_kwargs: Any) -> web.Application:
    """The chatbot (/, /ws) with the room consumer on /ws2 and /announce."""
    app = web.Application()
    chatbot_server.setup(app, settings or chatbot_server.settings_from_dict({"bot": {"name": "echo"}}), **setup_kwargs)
    app.router.add_get("/ws2", RoomConsumer.as_handler())
    app.router.add_post("/announce", announce)
    return app


def main() -> None:
    """Serve the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    web.run_app(make_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
