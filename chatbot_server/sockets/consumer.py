"""WebsocketConsumer: the connect / receive / disconnect model on aiohttp's WebSocketResponse.

Subclass it, override the `on_*` hooks, and route it with one line:

    app.router.add_get("/ws", MyConsumer.as_handler())

Channel-layer messages sent to the consumer's channel or to its groups are dispatched to methods
by their "type": {"type": "chat.message"} calls `chat_message(message)`, if that method is marked
with the `@message_handler` decorator (so no other method can ever be reached from a message).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from aiohttp import WSCloseCode, WSMsgType, web

from ..config import Settings
from ..deadlines import first_step, resume
from ..errors import ChatbotServerError, NotSetUpError
from ..jsonutil import dumpb
from ..keys import CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY
from ..layers import ChannelLayer, Message
from ..protocol import CLOSE_SLOW_READER
from .origin import origin_allowed
from .ratelimit import TokenBucket, client_ip
from .registry import ConnectionRegistry

log = logging.getLogger("chatbot_server.consumer")

# Enum members as module constants: each WSMsgType.X lookup costs ~50 ns on Python 3.11, and the
# receive loop and every send make several.
_TEXT, _BINARY, _PING, _PONG, _ERROR = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG, WSMsgType.ERROR

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MessageHandler = Callable[[Any, Message], Awaitable[None] | None]
_HANDLER_MARK = "__chatbot_message_handler__"


def message_handler(method: MessageHandler) -> MessageHandler:
    """Mark a consumer method as the handler of layer messages whose type maps to its name.

    The method may be `async def` (it runs in the socket's drain task, in order) or a plain `def`
    that only calls `send_json_nowait` (it runs as the message arrives, with no task: fastest for
    broadcasts).
    """
    setattr(method, _HANDLER_MARK, True)
    return method

# Bytes aiohttp may queue for one socket before a send waits for the client to read.
_WRITER_LIMIT = 64 * 1024
# A send that leaves less than this in the transport's buffer never waits (asyncio pauses writing
# at 64 KiB by default), so it needs no timeout on the hot path.
_NEVER_BLOCKS = 16 * 1024
assert _NEVER_BLOCKS <= 65536  # _write_now writes 16-bit lengths at most


class WebsocketConsumer:
    """One instance per socket. Override on_connect, on_receive_text/on_receive_bytes, on_disconnect."""

    # Slots: an idle socket's consumer costs ~1 KiB less than with a __dict__ (10,000 sockets).
    # Subclasses without __slots__ simply get a __dict__ as usual.
    __slots__ = (
        "__weakref__", "_bucket", "_closed_with", "_dispatching", "_drain_task", "_groups", "_ip_counted",
        "_registry", "_strikes", "busy", "channel_name", "client_ip", "close_code", "connection_id",
        "last_active", "last_heard", "layer", "request", "settings", "stats", "transport", "ws",
    )

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
        # The connection's transport, kept once the socket is open (request.transport is a property
        # chain, and every send asks for the write buffer's size).
        self.transport: asyncio.Transport | None = None
        limits = self.settings.limits
        # Pings are sent by the registry's one sweep per application (limits.heartbeat), not by a
        # timer per socket that aiohttp would re-arm on every frame received.
        self.ws = web.WebSocketResponse(
            autoping=False,
            max_msg_size=limits.max_msg_size,
            compress=False,  # chat frames are small; deflate would cost CPU and ~100 KiB per socket
            writer_limit=_WRITER_LIMIT,
        )
        self.stats = self._registry.stats
        self.client_ip = client_ip(request, self.settings.server.trusted_proxies)
        self.connection_id = secrets.token_hex(6)
        self.channel_name = ""
        self.close_code: int | None = None
        self._groups: list[str] = []  # a few names: a list is 64 bytes, a set at least 216
        self._drain_task: asyncio.Task[None] | None = None
        self._bucket = TokenBucket(limits.rate_per_second, limits.rate_burst)
        self._strikes = 0
        self._ip_counted = False
        self._closed_with: int | None = None
        self._dispatching = False
        self.last_active = time.monotonic()
        self.last_heard = 0.0  # when the last pong came (the registry pings quiet sockets)
        # True while a hook runs: the receive loop cannot read pongs then, so the heartbeat neither
        # pings nor drops the socket (hooks are bounded by bot.timeout and limits.send_timeout).
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
        self.transport = self.request.transport
        _right_size_reads(self.transport)
        await self._registry.add(self)
        self.stats.connections_total += 1
        stats = self.stats
        take_token = self._bucket.take
        clock = time.monotonic
        try:
            self.channel_name = await self.layer.new_channel(self.channel_prefix)
            self.layer.set_listener(self.channel_name, self._on_layer_message)
            self.layer.set_taker(self.channel_name, self._take_layer_message)
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
                    try:
                        await ws.pong(msg.data)
                    except ConnectionError:
                        pass  # the peer went away; the next receive sees the close
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

        A client that stops reading cannot make the server buffer without bound: aiohttp blocks the
        send once `_WRITER_LIMIT` bytes are queued, and after `limits.send_timeout` seconds blocked the
        connection is dropped (logged and counted with close code 4001).
        """
        await self.send_encoded(dumpb(payload))

    async def send_encoded(self, data: bytes) -> None:
        """send_json for a frame already encoded as JSON bytes."""
        if self._write_now(data):
            return
        waiting = self._write_then_wait(data)
        if waiting is not None:
            await self._wait_sent(waiting)

    def send_json_nowait(self, payload: Any) -> None:
        """Send one JSON text frame without waiting, for synchronous message handlers.

        Written at once, in order with the socket's other frames; when the client is slow to read,
        a background task waits for it like send_json (and drops a client that stopped reading).
        """
        self.send_encoded_nowait(dumpb(payload))

    def send_encoded_nowait(self, data: bytes) -> None:
        """send_json_nowait for a frame already encoded (a broadcast encodes once for everyone)."""
        if self._write_now(data):
            return
        waiting = self._write_then_wait(data)
        if waiting is not None:
            self._registry.keep_alive(self._wait_sent(waiting))

    def _write_then_wait(self, data: bytes) -> asyncio.Future[None] | None:
        """Write a frame through aiohttp now (too much is buffered for _write_now), so it keeps its
        place among the socket's frames; the wait for the client to read, if aiohttp needs one, as
        a task of its own (None if there is nothing to wait for).

        The wait is a task of its own because aiohttp's sends on one socket wait on one shared
        future, and a cancelled waiter would cancel it for all of them: the task is only ever
        awaited through asyncio.shield(), so a sender's timeout or cancellation never reaches it.
        """
        if self.ws.closed:
            return None
        send = self.ws.send_frame(data, _TEXT)
        try:
            finished, suspended_on = first_step(send)
        except ConnectionError:
            return None  # the peer went away; the receive loop will see the close
        except asyncio.CancelledError:  # the shared future, cancelled by code other than ours
            self._lost_shared_wait()
            return None
        self.stats.messages_out += 1
        if finished:
            return None
        waiting = asyncio.get_running_loop().create_task(_finish_send(send, suspended_on))
        waiting.add_done_callback(_retrieve)
        return waiting

    async def _wait_sent(self, waiting: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(self.settings.limits.send_timeout):
                await asyncio.shield(waiting)
        except TimeoutError:
            await self._drop_slow_reader()
        except ConnectionError:
            pass  # the peer went away; the receive loop will see the close
        except asyncio.CancelledError:
            if _cancelling():
                raise  # this sender was cancelled (a bot deadline, shutdown); the wait goes on
            self._lost_shared_wait()

    def _write_now(self, data: bytes) -> bool:
        """Write one text frame straight to the transport if that cannot block; True if done.

        True also when the socket is closed or closing (the frame is dropped, as aiohttp would).
        False when the transport's buffer is too full: the caller goes through aiohttp's
        send_frame, which waits for the client to read.
        """
        transport = self.transport
        if transport is None or self.ws.closed:
            return transport is not None
        if transport.is_closing():
            return True  # the peer went away; the receive loop will see the close
        size = len(data)
        if transport.get_write_buffer_size() + size >= _NEVER_BLOCKS:
            return False
        # An unmasked, uncompressed, final text frame (RFC 6455 5.2): what aiohttp's writer would
        # write for it, without its three coroutine frames (compress=False is set for every socket).
        if size < 126:
            transport.write(_SHORT_HEADERS[size] + data)
        else:  # 126..16383 bytes: a 16-bit length
            transport.write(_HEADER_16(0x81, 126, size) + data)
        self.stats.messages_out += 1
        return True

    def _lost_shared_wait(self) -> None:
        # aiohttp's future that waits for this client to read was cancelled by code other than ours
        # (ours only awaits it shielded): until the client reads, no send would wait any more, so
        # nothing would bound the buffer. Drop the client, as for a slow reader.
        log.info("ws.drain_wait_cancelled conn=%s", self.connection_id)
        self._reset(CLOSE_SLOW_READER)

    async def _drop_slow_reader(self) -> None:
        # The client's buffers are full, so no close frame could reach it: reset the connection.
        # The receive loop then sees the end of the stream and cleans up as for any disconnect.
        if self._closed_with is None:  # once per connection, however many sends time out
            log.warning("ws.slow_reader conn=%s ip=%s code=%d", self.connection_id, self.client_ip, CLOSE_SLOW_READER)
            self.stats.error("slow_reader")
        self._reset(CLOSE_SLOW_READER)

    def ping_nowait(self) -> None:
        """Send a websocket ping now (the registry's heartbeat sweep calls this)."""
        transport = self.transport
        if transport is not None and not self.ws.closed and not transport.is_closing():
            transport.write(_PING_FRAME)  # never waits: a client that does not read gets no pong

    def drop_unresponsive(self) -> None:
        """Reset a connection whose peer did not answer a ping in time (close code 1006, like aiohttp)."""
        log.info("ws.no_pong conn=%s ip=%s", self.connection_id, self.client_ip)
        self.stats.error("no_pong")
        self._reset(WSCloseCode.ABNORMAL_CLOSURE)

    def _reset(self, code: int) -> None:
        if self._closed_with is None:
            self._closed_with = code
        transport = self.transport
        if transport is not None:
            transport.abort()

    async def close(self, *, code: int = WSCloseCode.OK, message: str = "", notify: bool = False) -> None:
        """Close the socket with a code (and, if `notify`, a last system frame first)."""
        if self.ws.closed:
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

    # ----------------------------------------------------- layer dispatching
    def _take_layer_message(self, message: Message) -> bool:
        # Offered by the layer for a message that arrives while none is queued for this socket:
        # a synchronous handler runs it here, with no queue (a broadcast's common case). Anything
        # else is queued and goes through _on_layer_message, which keeps the order.
        if self._dispatching:
            return False
        task = self._drain_task
        if task is not None and not task.done():
            return False
        handler, is_async = _handler_for(type(self), message["type"])
        if handler is None or is_async:
            return False
        self._dispatching = True
        self._run_sync_handler(handler, message)
        self._dispatching = False
        return True

    def _run_sync_handler(self, handler: MessageHandler, message: Message) -> None:
        try:
            handler(self, message)
        except Exception:
            log.exception("ws.dispatch_failed conn=%s type=%s", self.connection_id, message["type"][:64])

    def _on_layer_message(self) -> None:
        # Called synchronously by the layer for each message that arrives for this socket.
        # Synchronous handlers (plain `def`, typically a send_json_nowait) run right here: a
        # broadcast to 1,000 members costs no task at all. An async handler runs in a drain task,
        # which keeps the order of everything queued behind it.
        task = self._drain_task
        if task is not None and not task.done():
            return
        if self._dispatching:  # a handler sent to its own socket: handle after it, in order
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
            return
        receive = self.layer.receive_nowait
        self._dispatching = True
        try:
            while (message := receive(self.channel_name)) is not None:
                handler, is_async = _handler_for(type(self), message["type"])
                if handler is None or is_async:
                    self._drain_task = asyncio.get_running_loop().create_task(self._drain(message))
                    return
                self._run_sync_handler(handler, message)
        finally:
            self._dispatching = False

    async def _drain(self, first: Message | None = None) -> None:
        if first is not None:
            await self._dispatch_logged(first)
        receive = self.layer.receive_nowait
        while (message := receive(self.channel_name)) is not None:
            await self._dispatch_logged(message)

    async def _dispatch_logged(self, message: Message) -> None:
        try:
            await self.dispatch(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ws.dispatch_failed conn=%s type=%s", self.connection_id, message.get("type"))

    async def dispatch(self, message: Message) -> None:
        """Call the handler method named by the message type ("chat.message" → chat_message)."""
        handler, _ = _handler_for(type(self), message["type"])
        if handler is None:
            log.warning("ws.no_handler conn=%s type=%s", self.connection_id, message["type"][:64])
            return
        result = handler(self, message)
        if inspect.isawaitable(result):
            await result


_BASE_ATTRIBUTES = frozenset(dir(WebsocketConsumer))


# asyncio's selector transport reads with recv(256 KiB): above glibc's mmap threshold, so every
# read maps, faults in, shrinks and unmaps a fresh buffer (3 extra system calls per frame). Chat
# frames are small; 64 KiB reads come from the heap and still take any frame in a few calls.
_READ_SIZE = 64 * 1024


def _right_size_reads(transport: asyncio.BaseTransport | None) -> None:
    if transport is not None and getattr(transport, "max_size", 0) > _READ_SIZE:
        transport.max_size = _READ_SIZE  # type: ignore[attr-defined]


# Headers of unmasked final text frames (FIN + opcode 1, then the payload length).
_SHORT_HEADERS = [bytes((0x81, size)) for size in range(126)]
_HEADER_16 = struct.Struct("!BBH").pack
_PING_FRAME = b"\x89\x00"  # FIN + ping, no payload


def _cancelling() -> bool:
    """Whether the running task is being cancelled (a CancelledError it sees is then its own)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _finish_send(send: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    await resume(send, suspended_on)


def _retrieve(waiting: asyncio.Future[None]) -> None:
    # A wait nobody awaits any more (its sender timed out or was cancelled) may end with the
    # connection's error: take it, or asyncio logs "exception was never retrieved".
    if not waiting.cancelled():
        waiting.exception()


_HANDLERS: dict[tuple[type, str], tuple[MessageHandler | None, bool]] = {}


def _handler_for(cls: type[WebsocketConsumer], kind: str) -> tuple[MessageHandler | None, bool]:
    """The handler for a message type and whether it is async (cached per class and type)."""
    key = (cls, kind)
    found = _HANDLERS.get(key)
    if found is None:
        found = _find_handler(cls, kind)
        if len(_HANDLERS) < 10_000:  # types come from our own code; bound it all the same
            _HANDLERS[key] = found
    return found


def _find_handler(cls: type[WebsocketConsumer], kind: str) -> tuple[MessageHandler | None, bool]:
    # The only string-to-method step: only methods marked with @message_handler are reachable,
    # and never base-class or private names, whatever the message type says.
    name = kind.replace(".", "_")
    if name.startswith("_") or name in _BASE_ATTRIBUTES or not name.isidentifier():
        return None, False
    handler = getattr(cls, name, None)
    if handler is None or not getattr(handler, _HANDLER_MARK, False):
        return None, False
    return handler, inspect.iscoroutinefunction(handler)
