"""Layer messages to consumer methods: the `@message_handler` mark, and each socket's inbox.

A message {"type": "chat.message"} is handled by the consumer method `chat_message`, if that
method is marked with `@message_handler` (so no other method can ever be reached from a message).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..layers import Message

log = logging.getLogger("chatbot_server.consumer")

#: A handler method: (self, message) -> None or an awaitable. Its message parameter may be typed
#: with the TypedDict of the messages it handles (messages.py); what arrives is still read
#: defensively, since it may come from another process (or version).
MessageHandler = Callable[[Any, Any], Awaitable[None] | None]
H = TypeVar("H", bound=MessageHandler)
_HANDLER_MARK = "__chatbot_message_handler__"


def message_handler(method: H) -> H:
    """Mark a consumer method as the handler of layer messages whose type maps to its name.

    The method may be `async def` (it runs in the socket's inbox task, in order) or a plain `def`
    that only sends without waiting (`send_json_nowait`): it runs as the message arrives, with no
    task, which is what makes a broadcast to thousands of sockets cheap.
    """
    setattr(method, _HANDLER_MARK, True)
    return method


class Inbox:
    """The layer messages of one socket, handled one at a time in arrival order.

    The channel layer pushes each message to `deliver` (ChannelLayer.subscribe). A message that
    finds nothing queued and has a synchronous handler runs at once; anything else waits here for
    the inbox task, which keeps the order of everything behind an async handler. At most
    `capacity` messages wait: beyond that `deliver` refuses them, and the layer counts the drop.
    """

    __slots__ = ("_busy", "_owner", "_queue", "_task", "capacity")

    def __init__(self, owner: object, capacity: int) -> None:
        self._owner = owner
        self.capacity = capacity
        self._queue: deque[Message] | None = None  # made on the first message that must wait
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a handler runs (a message it sends to its own socket waits its turn)

    def deliver(self, message: Message) -> bool:
        queue = self._queue
        if self._busy or queue:
            return self._enqueue(message)
        handler, is_async = handler_for(type(self._owner), message["type"])
        if handler is None:
            log.warning("ws.no_handler type=%s", str(message["type"])[:64])
            return True
        if is_async:
            return self._enqueue(message)
        self._busy = True
        try:
            handler(self._owner, message)
        except Exception:
            log.exception("ws.dispatch_failed type=%s", str(message["type"])[:64])
        finally:
            self._busy = False
        if self._queue:  # the handler sent something to its own socket
            self._start()
        return True

    def _enqueue(self, message: Message) -> bool:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self.capacity:
            return False
        queue.append(message)
        if not self._busy:
            self._start()
        return True

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        while queue:
            message = queue.popleft()
            self._busy = True
            try:
                await dispatch(self._owner, message)
            except Exception:
                log.exception("ws.dispatch_failed type=%s", str(message["type"])[:64])
            finally:
                self._busy = False

    def take_pending(self) -> list[Message]:
        """Remove and return the messages still waiting (the socket is going away)."""
        queue, self._queue = self._queue, None
        return list(queue or ())

    async def wait_idle(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until no handler runs and nothing is queued."""
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("ws.inbox_busy after=%.1fs", timeout)

    async def close(self) -> None:
        """Stop the inbox task (messages still queued are dropped)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def dispatch(owner: object, message: Message) -> None:
    """Call the handler method named by the message type ("chat.message" → chat_message)."""
    handler, _ = handler_for(type(owner), message["type"])
    if handler is None:
        log.warning("ws.no_handler type=%s", str(message["type"])[:64])
        return
    result = handler(owner, message)
    if inspect.isawaitable(result):
        await result


_HANDLERS: dict[tuple[type, str], tuple[MessageHandler | None, bool]] = {}
#: Names no message may reach, whatever its type says (set by the consumer base class).
RESERVED: set[str] = set()


def handler_for(cls: type, kind: str) -> tuple[MessageHandler | None, bool]:
    """The handler for a message type and whether it is async (cached per class and type)."""
    key = (cls, kind)
    found = _HANDLERS.get(key)
    if found is None:
        found = _find_handler(cls, kind)
        if len(_HANDLERS) < 10_000:  # types come from our own code; bound it all the same
            _HANDLERS[key] = found
    return found


def _find_handler(cls: type, kind: str) -> tuple[MessageHandler | None, bool]:
    # The only string-to-method step: only methods marked with @message_handler are reachable,
    # and never base-class or private names.
    name = kind.replace(".", "_")
    if name.startswith("_") or name in RESERVED or not name.isidentifier():
        return None, False
    handler = getattr(cls, name, None)
    if handler is None or not getattr(handler, _HANDLER_MARK, False):
        return None, False
    return handler, inspect.iscoroutinefunction(handler)
