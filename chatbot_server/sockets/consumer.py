"""WebsocketConsumer: the connect / receive / disconnect model on aiohttp's WebSocketResponse.

Subclass it, override the `on_*` hooks, and route it with one line:

    app.router.add_get("/ws", MyConsumer.as_handler())

Channel-layer messages sent to the consumer's channel or to its groups are dispatched to methods
by their "type": {"type": "chat.message"} calls `chat_message(message)`, if that method is marked
with the `@message_handler` decorator (sockets/dispatch.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web

from ..config import Settings
from ..errors import ChatbotServerError, NotSetUpError
from ..jsonutil import dumpb
from ..keys import CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY
from ..layers import ChannelLayer, Message
from ..removed import gone
from . import dispatch as _dispatch
from .codes import CLOSE_SLOW_READER
from .dispatch import Inbox, message_handler
from .origin import origin_allowed
from .ratelimit import TokenBucket, client_ip
from .registry import ConnectionRegistry
from .wire import PING, FrameWriter, control_frame

__all__ = ["WebsocketConsumer", "message_handler"]

log = logging.getLogger("chatbot_server.consumer")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Enum members as module constants: the receive loop compares every frame's type with them.
_TEXT, _BINARY, _PING, _PONG, _ERROR = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG, WSMsgType.ERROR


class WebsocketConsumer:
    """One instance per socket. Override on_connect, on_receive_text/on_receive_bytes, on_disconnect."""

    # Slots: an idle socket's consumer costs ~1 KiB less than with a __dict__ (10,000 sockets).
    # Subclasses without __slots__ simply get a __dict__ as usual.
    __slots__ = (
        "__weakref__",
        "_bucket",
        "_closed_with",
        "_frames",
        "_groups",
        "_ip_counted",
        "_registry",
        "_strikes",
        "busy",
        "channel_name",
        "client_ip",
        "close_code",
        "connection_id",
        "inbox",
        "last_active",
        "last_heard",
        "layer",
        "request",
        "settings",
        "stats",
        "ws",
    )  # fmt: skip

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
        limits = self.settings.limits
        # Pings are sent by the registry's one sweep per application (limits.heartbeat), not by a
        # timer per socket that aiohttp would re-arm on every frame received.
        self.ws = web.WebSocketResponse(
            autoping=False,
            max_msg_size=limits.max_msg_size,
            compress=False,  # chat frames are small; deflate would cost CPU and ~100 KiB per socket
        )
        self._frames: FrameWriter | None = None  # once the socket is open
        self.stats = self._registry.stats
        self.client_ip = client_ip(request, self.settings.server.trusted_proxies)
        self.connection_id = secrets.token_hex(6)
        self.channel_name = ""
        self.inbox = Inbox(self, self.layer.capacity)
        self.close_code: int | None = None
        self._groups: list[str] = []  # a few names: a list is 64 bytes, a set at least 216
        self._bucket = TokenBucket(limits.rate_per_second, limits.rate_burst)
        self._strikes = 0
        self._ip_counted = False
        self._closed_with: int | None = None
        self.last_active = time.monotonic()
        self.last_heard = 0.0  # when the last pong came (the registry pings quiet sockets)
        # True while a hook runs: the receive loop cannot read pongs then, so the heartbeat neither
        # pings nor drops the socket (hooks are bounded by bot.timeout).
        self.busy = True

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
        try:
            await ws.prepare(self.request)
        except BaseException:
            self._release_ip()
            raise
        transport = self.request.transport
        if transport is None:  # the client went away during the handshake
            self._release_ip()
            return ws
        self._frames = FrameWriter(
            transport,  # type: ignore[arg-type]  # a web request's transport is a Transport
            send_timeout=self.settings.limits.send_timeout,
            on_stuck=self._drop_slow_reader,
        )
        await self._registry.add(self)
        stats = self.stats
        stats.connections_total += 1
        take_token = self._bucket.take
        clock = time.monotonic
        try:
            self.channel_name = await self.layer.new_channel(self.channel_prefix)
            self.layer.subscribe(self.channel_name, self.inbox.deliver)
            for group in self.groups:
                await self.group_add(group)
            await self.on_connect()
            while not ws.closed:
                self.busy = False
                msg = await ws.receive()
                self.busy = True
                kind = msg.type
                if kind is _TEXT or kind is _BINARY:
                    # Only frames the user sent count as activity (pongs to heartbeats do not);
                    # the registry's idle sweep closes sockets quiet for limits.idle_timeout.
                    self.last_active = now = clock()
                    stats.messages_in += 1
                    if not take_token(now):
                        await self.on_rate_limited()
                        continue
                    self._strikes = 0
                    if kind is _TEXT:
                        await self.on_receive_text(msg.data)
                    else:
                        await self.on_receive_bytes(msg.data)
                elif kind is _PONG:
                    self.last_heard = clock()
                elif kind is _PING:
                    # Through the writer, so a client that pings and never reads is bounded too.
                    self._frames.control(control_frame(0xA, msg.data))
                elif kind is _ERROR:
                    log.info("ws.error conn=%s error=%s", self.connection_id, msg.data)
                    stats.error(f"close_{ws.close_code}")
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ws.crash conn=%s", self.connection_id)
            await self.close(code=WSCloseCode.INTERNAL_ERROR, message="internal error")
        finally:
            self.close_code = self._closed_with if self._closed_with is not None else ws.close_code
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
        if not origin_allowed(
            self.request, self.settings.security.allowed_origins, self.settings.server.trusted_proxies
        ):
            log.warning("ws.refused reason=origin origin=%r", self.request.headers.get("Origin", "")[:100])
            self.stats.error("origin_refused")
            return web.Response(status=403, text="origin not allowed")
        if not self._registry.per_ip.acquire(self.client_ip):
            log.warning("ws.refused reason=per_ip_limit ip=%s", self.client_ip)
            self.stats.error("ip_limit")
            return web.Response(status=429, text="too many connections from this address")
        self._ip_counted = True
        return None

    def _release_ip(self) -> None:
        if self._ip_counted:
            self._ip_counted = False
            self._registry.per_ip.release(self.client_ip)

    async def _finish(self) -> None:
        try:
            await self.on_disconnect(self.close_code)
        except Exception:
            log.exception("ws.on_disconnect_failed conn=%s", self.connection_id)
        finally:
            if self._frames is not None:
                self._frames.cancel()
            await self.inbox.close()
            if self.channel_name:
                for group in list(self._groups):
                    try:
                        await self.layer.group_discard(group, self.channel_name)
                    except ChatbotServerError as exc:
                        log.warning("ws.group_discard_failed group=%s error=%s", group, exc)
                self._groups.clear()
                await self.layer.release_channel(self.channel_name)
            self._release_ip()
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

    async def on_rate_limited(self) -> None:
        """Called for a frame over the rate limit (it is dropped); closes 1008 on sustained abuse."""
        self._strikes += 1
        self.stats.error("rate_limited")
        if self._strikes >= self.settings.limits.abuse_strikes:
            log.warning("ws.abuse conn=%s ip=%s", self.connection_id, self.client_ip)
            await self.close(code=WSCloseCode.POLICY_VIOLATION, message="rate limit exceeded")

    # ---------------------------------------------------------------- sending
    async def send_json(self, payload: Any) -> None:
        """Send one JSON text frame; a closed socket drops it silently.

        Never waits for the client: the frame is written at once, in order. A client that stops
        reading cannot make the server hold its frames without bound: once it has left too much
        unread, or anything unread for `limits.send_timeout` seconds, the connection is dropped
        (logged and counted, close code 4001). See sockets/wire.py.
        """
        self.send_encoded_nowait(dumpb(payload))

    async def send_encoded(self, data: bytes) -> None:
        """send_json for a frame already encoded as JSON bytes."""
        self.send_encoded_nowait(data)

    def send_json_nowait(self, payload: Any) -> None:
        """send_json for synchronous code (message handlers written as plain `def`)."""
        self.send_encoded_nowait(dumpb(payload))

    def send_encoded_nowait(self, data: bytes) -> None:
        """send_json_nowait for a frame already encoded (a broadcast encodes once for everyone)."""
        writer = self._frames
        if writer is not None and not self.ws.closed and writer.text(data):
            self.stats.messages_out += 1

    def _drop_slow_reader(self) -> None:
        # The client's buffers are full, so no close frame could reach it: reset the connection.
        # The receive loop then sees the end of the stream and cleans up as for any disconnect.
        log.warning("ws.slow_reader conn=%s ip=%s code=%d", self.connection_id, self.client_ip, CLOSE_SLOW_READER)
        self.stats.error("slow_reader")
        self._reset(CLOSE_SLOW_READER)

    def ping_nowait(self) -> None:
        """Send a websocket ping now (the registry's heartbeat sweep calls this)."""
        if self._frames is not None and not self.ws.closed:
            self._frames.control(PING)

    def drop_unresponsive(self) -> None:
        """Reset a connection whose peer did not answer a ping in time (close code 1006, like aiohttp)."""
        log.info("ws.no_pong conn=%s ip=%s", self.connection_id, self.client_ip)
        self.stats.error("no_pong")
        self._reset(WSCloseCode.ABNORMAL_CLOSURE)

    def _reset(self, code: int) -> None:
        if self._closed_with is None:
            self._closed_with = code
        if self._frames is not None:
            self._frames.transport.abort()

    async def close(self, *, code: int = WSCloseCode.OK, message: str = "", notify: bool = False) -> None:
        """Close the socket with a code (and, if `notify`, a last system frame first)."""
        if self.ws.closed or not self.ws.prepared:
            return
        self._closed_with = code
        if notify:
            await self.notify_close(code, message)
        await self.ws.close(code=code, message=message.encode()[:120])

    async def notify_close(self, code: int, message: str) -> None:
        """Send a last frame before closing; the chat consumer says why in Chinese."""

    # ----------------------------------------------------------------- groups
    async def group_add(self, group: str) -> None:
        """Join a group; left automatically on disconnect."""
        await self.layer.group_add(group, self.channel_name)
        if group not in self._groups:
            self._groups.append(group)

    async def group_discard(self, group: str) -> None:
        """Leave a group."""
        if group in self._groups:
            self._groups.remove(group)
        await self.layer.group_discard(group, self.channel_name)

    def in_group(self, group: str) -> bool:
        """Whether this socket has joined `group`."""
        return group in self._groups

    # ----------------------------------------------------- layer dispatching
    async def dispatch(self, message: Message) -> None:
        """Call the handler method named by the message type ("chat.message" → chat_message)."""
        await _dispatch.dispatch(self, message)

    if not TYPE_CHECKING:  # names 0.2 removed: a clear error for old host code (removed.py)
        transport = gone("transport")


# No message type may reach the base class's own attributes.
_dispatch.RESERVED.update(dir(WebsocketConsumer))
