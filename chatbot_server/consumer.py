"""WebsocketConsumer: the connect / receive / disconnect model on aiohttp's WebSocketResponse.

Subclass it, override the `on_*` hooks, and route it with one line:

    app.router.add_get("/ws", MyConsumer.as_handler())

Channel-layer messages sent to the consumer's channel or to its groups are dispatched to methods
by their "type": {"type": "chat.message"} calls `chat_message(message)`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web

from .config import Settings
from .connections import ConnectionRegistry
from .errors import ChatbotServerError, NotSetUpError
from .jsonutil import dumpb
from .keys import CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY
from .layers import ChannelLayer, Message
from .origin import origin_allowed
from .protocol import CLOSE_IDLE

log = logging.getLogger("chatbot_server.consumer")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebsocketConsumer:
    """One instance per socket. Override on_connect, on_receive_text/on_receive_bytes, on_disconnect."""

    #: Groups every socket joins on connect and leaves on disconnect.
    groups: ClassVar[tuple[str, ...]] = ()
    #: Prefix of the channel names this consumer gets from the layer.
    channel_prefix: ClassVar[str] = "ws"

    def __init__(self, request: web.Request) -> None:
        try:
            self.settings: Settings = request.config_dict[SETTINGS_KEY]
            self.layer: ChannelLayer = request.config_dict[LAYER_KEY]
            self._registry: ConnectionRegistry = request.config_dict[CONNECTIONS_KEY]
        except KeyError:
            raise NotSetUpError() from None
        self.request = request
        self.ws = web.WebSocketResponse(
            heartbeat=self.settings.limits.heartbeat or None,
            max_msg_size=self.settings.limits.max_msg_size,
            compress=False,  # chat frames are small; deflate would cost CPU and ~100 KiB per socket
        )
        self.connection_id = secrets.token_hex(6)
        self.channel_name = ""
        self.close_code: int | None = None
        self._groups: set[str] = set()
        self._drain_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- routing
    @classmethod
    def as_handler(cls) -> Handler:
        """An aiohttp handler that runs one consumer per websocket request."""

        async def handler(request: web.Request) -> web.StreamResponse:
            return await cls(request).run()

        handler.__name__ = f"{cls.__name__}_handler"
        return handler

    # -------------------------------------------------------------- lifecycle
    async def run(self) -> web.StreamResponse:
        """Accept the socket, run the hooks, and always clean up."""
        refusal = self.refuse()
        if refusal is not None:
            return refusal
        ws = self.ws
        await ws.prepare(self.request)
        self._registry.add(self)
        idle = self.settings.limits.idle_timeout or None
        try:
            self.channel_name = await self.layer.new_channel(self.channel_prefix)
            self.layer.set_listener(self.channel_name, self._on_layer_message)
            for group in self.groups:
                await self.group_add(group)
            await self.on_connect()
            while not ws.closed:
                try:
                    msg = await ws.receive(timeout=idle)
                except TimeoutError:
                    log.info("ws.idle conn=%s", self.connection_id)
                    await self.close(code=CLOSE_IDLE, message="idle timeout", notify=True)
                    break
                if msg.type is WSMsgType.TEXT:
                    await self.on_receive_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self.on_receive_bytes(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    log.info("ws.error conn=%s error=%s", self.connection_id, msg.data)
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ws.crash conn=%s", self.connection_id)
            await self.close(code=WSCloseCode.INTERNAL_ERROR, message="internal error")
        finally:
            self.close_code = ws.close_code
            # Clean-up must finish even if the handler task is cancelled (handler_cancellation=True,
            # as in aiohttp's test server): it runs in a task the registry keeps alive.
            await asyncio.shield(self._registry.keep_alive(self._finish()))
        return ws

    def refuse(self) -> web.StreamResponse | None:
        """Return a response to refuse the handshake (403 for a foreign Origin), or None to accept."""
        if not self._registry.accepting:
            return web.Response(status=503, text="server is shutting down")
        if len(self._registry) >= self.settings.limits.max_connections:
            log.warning("ws.refused reason=max_connections")
            return web.Response(status=503, text="too many connections")
        if not origin_allowed(self.request, self.settings.security.allowed_origins):
            log.warning("ws.refused reason=origin origin=%r", self.request.headers.get("Origin", "")[:100])
            return web.Response(status=403, text="origin not allowed")
        return None

    async def _finish(self) -> None:
        try:
            await self.on_disconnect(self.close_code)
        except Exception:
            log.exception("ws.on_disconnect_failed conn=%s", self.connection_id)
        finally:
            if self._drain_task is not None:
                self._drain_task.cancel()
                await asyncio.gather(self._drain_task, return_exceptions=True)
            if self.channel_name:
                for group in list(self._groups):
                    try:
                        await self.layer.group_discard(group, self.channel_name)
                    except ChatbotServerError as exc:
                        log.warning("ws.group_discard_failed group=%s error=%s", group, exc)
                self._groups.clear()
                await self.layer.release_channel(self.channel_name)
            await self._registry.discard(self)

    # ------------------------------------------------------------------ hooks
    async def on_connect(self) -> None:
        """Called once the socket is open and joined to `groups`."""

    async def on_receive_text(self, text: str) -> None:
        """Called for each text frame from the client."""

    async def on_receive_bytes(self, data: bytes) -> None:
        """Called for each binary frame from the client."""

    async def on_disconnect(self, code: int | None) -> None:
        """Called once when the socket has closed, whatever the reason; groups are left after it."""

    # ---------------------------------------------------------------- sending
    async def send_json(self, payload: Any) -> None:
        """Send one JSON text frame; a closed socket drops it silently."""
        if self.ws.closed:
            return
        try:
            await self.ws.send_frame(dumpb(payload), WSMsgType.TEXT)
        except ConnectionError:
            pass  # the peer went away; the receive loop will see the close

    async def close(self, *, code: int = WSCloseCode.OK, message: str = "", notify: bool = False) -> None:
        """Close the socket with a code (and, if `notify`, a last system frame first)."""
        if self.ws.closed:
            return
        if notify:
            await self.notify_close(code, message)
        await self.ws.close(code=code, message=message.encode()[:120])

    async def notify_close(self, code: int, message: str) -> None:
        """Send a last frame before closing; the chat consumer says why in Chinese."""

    # ----------------------------------------------------------------- groups
    async def group_add(self, group: str) -> None:
        """Join a group; left automatically on disconnect."""
        await self.layer.group_add(group, self.channel_name)
        self._groups.add(group)

    async def group_discard(self, group: str) -> None:
        """Leave a group."""
        self._groups.discard(group)
        await self.layer.group_discard(group, self.channel_name)

    # ----------------------------------------------------- layer dispatching
    def _on_layer_message(self) -> None:
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        receive = self.layer.receive_nowait
        while (message := receive(self.channel_name)) is not None:
            try:
                await self.dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ws.dispatch_failed conn=%s type=%s", self.connection_id, message.get("type"))

    async def dispatch(self, message: Message) -> None:
        """Call the handler method named by the message type ("chat.message" → chat_message)."""
        handler = _handler_for(type(self), message["type"])
        if handler is None:
            log.warning("ws.no_handler conn=%s type=%s", self.connection_id, message["type"][:64])
            return
        await handler(self, message)


_BASE_ATTRIBUTES = frozenset(dir(WebsocketConsumer))


def _handler_for(cls: type[WebsocketConsumer], kind: str) -> Callable[[Any, Message], Awaitable[None]] | None:
    # The only string-to-method step. Lifecycle methods of the base class and private names can
    # never be reached from a message, whatever its type says.
    name = kind.replace(".", "_")
    if name.startswith("_") or name in _BASE_ATTRIBUTES or not name.isidentifier():
        return None
    handler = getattr(cls, name, None)
    return handler if callable(handler) else None
