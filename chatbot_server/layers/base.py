"""The ChannelLayer interface, its naming and message rules, and the process-local mailboxes."""

from __future__ import annotations

import abc
import asyncio
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ChannelFull, InvalidMessageError, InvalidNameError
from ..removed import gone

#: A layer message: a dict with a string "type" and JSON-serialisable values (TypedDicts in
#: messages.py). Read-only for receivers: the members of a group share one object.
Message = Mapping[str, Any]

MAX_NAME_LENGTH = 100
_NAME_RE = re.compile(r"^[a-zA-Z0-9\-_.]+$")
# A process-specific channel: "<prefix>.<process>!<local>" (the "!" part is optional).
_CHANNEL_RE = re.compile(r"^[a-zA-Z0-9\-_.]+(![a-zA-Z0-9\-_.]*)?$")


def _validate_name(name: object, pattern: re.Pattern[str], what: str, extra: str) -> str:
    if not isinstance(name, str) or len(name) >= MAX_NAME_LENGTH or not pattern.match(name):
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use ASCII letters, digits, '-', '_' or '.'{extra}, "
            f"under {MAX_NAME_LENGTH} characters"
        )
    return name


def validate_group_name(name: object) -> str:
    """Return `name` if it is a valid group name, else raise InvalidNameError naming it."""
    return _validate_name(name, _NAME_RE, "group", "")


def validate_channel_name(name: object) -> str:
    """Return `name` if it is a valid channel name, else raise InvalidNameError naming it."""
    return _validate_name(name, _CHANNEL_RE, "channel", " (and one '!' for process-specific channels)")


def validate_message(message: object) -> Message:
    """Return `message` if it is a dict with a string "type", else raise InvalidMessageError."""
    if not isinstance(message, dict):
        raise InvalidMessageError(f"a message must be a dict, not {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidMessageError('a message needs a non-empty string "type"')
    return message


def process_of(channel: str) -> str | None:
    """The process part of a process-specific channel name, or None for a shared channel."""
    head, bang, _ = channel.partition("!")
    if not bang:
        return None
    return head.rpartition(".")[2]


def new_token(nbytes: int = 12) -> str:
    """A random URL-safe token usable inside channel names."""
    return secrets.token_urlsafe(nbytes).replace("-", "a").replace("_", "b")


@dataclass
class LayerStats:
    """Counters every layer keeps (plain ints, read by /metrics at scrape time)."""

    sent: int = 0
    group_sent: int = 0
    delivered: int = 0
    dropped: int = 0
    failures: int = 0
    reconnects: int = 0
    write_failures: int = 0  # writes the backend refused (Redis OOM, READONLY...)
    pending_writes: int = 0  # gauge: membership writes waiting to be retried
    late_writes: int = 0  # calls that stopped waiting for a backend past their deadline


@dataclass(frozen=True)
class LayerHealth:
    """What /healthz reports for the layer."""

    ok: bool
    backend: str
    detail: str = ""


#: A subscriber: called with each message for its channel, in order, as it arrives; False if it
#: cannot take it (its queue is full): the message is dropped, and `send()` raises ChannelFull.
Deliver = Callable[[Message], bool]


class Mailbox:
    """One channel of this process: its subscriber, or else a bounded FIFO of (expires_at,
    message) read by `receive()`."""

    __slots__ = ("_items", "_waiter", "deliver")

    # An idle channel holds nothing: share one empty tuple until the first queued message
    # (a deque costs ~600 bytes, times 10,000 idle sockets).
    _EMPTY: tuple[()] = ()

    def __init__(self) -> None:
        self._items: deque[tuple[float, Message]] | tuple[()] = Mailbox._EMPTY
        self._waiter: asyncio.Future[None] | None = None
        self.deliver: Deliver | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: Message, expires_at: float) -> None:
        items = self._items
        if not isinstance(items, deque):
            items = self._items = deque()
        items.append((expires_at, message))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drop_expired(self, now: float) -> None:
        items = self._items
        if isinstance(items, deque):
            while items and items[0][0] <= now:
                items.popleft()

    def get_nowait(self, now: float) -> Message | None:
        items = self._items
        if not items:
            return None
        if items[0][0] <= now:
            self.drop_expired(now)
            if not items:
                return None
        return items.popleft()[1]  # type: ignore[union-attr]

    async def get(self) -> Message:
        while True:
            message = self.get_nowait(time.monotonic())
            if message is not None:
                return message
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def subscribe(self, deliver: Deliver) -> int:
        """Hand every message from now on to `deliver`, starting with those queued; how many it refused."""
        if self.deliver is not None:
            raise RuntimeError("a channel has at most one subscriber")
        self.deliver = deliver
        refused = 0
        now = time.monotonic()
        while (message := self.get_nowait(now)) is not None:
            refused += not deliver(message)
        self._items = Mailbox._EMPTY
        return refused

    def wake_with_error(self, error: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class LocalMailboxes:
    """The channels this process delivers to, with capacity and expiry applied."""

    def __init__(self, *, capacity: int, expiry: float, stats: LayerStats | None = None) -> None:
        self.capacity = capacity
        self.expiry = expiry
        self.stats = stats if stats is not None else LayerStats()
        self._boxes: dict[str, Mailbox] = {}
        #: `channel in mailboxes` without a Python-level call (group sends test every member).
        self.contains: Callable[[str], bool] = self._boxes.__contains__

    def __len__(self) -> int:
        return len(self._boxes)

    def __contains__(self, channel: str) -> bool:
        return channel in self._boxes

    def box(self, channel: str) -> Mailbox:
        box = self._boxes.get(channel)
        if box is None:
            box = self._boxes[channel] = Mailbox()
        return box

    def deliver(self, channel: str, message: Message, *, strict: bool) -> bool:
        """Deliver or queue a message; when full, raise ChannelFull if `strict`, else drop it and return False."""
        if self.deliver_many((channel,), message):
            return True
        if strict:
            raise ChannelFull(f"channel {channel!r} is full ({self.capacity} messages)")
        return False

    def deliver_many(self, channels: Iterable[str], message: Message, *, known_only: bool = False) -> int:
        """Hand one message to several channels (full ones miss it); how many got it.

        `known_only`: skip channels this process has no mailbox for (released ones). One clock
        read and no per-member method calls on the way to a subscriber: a broadcast to thousands
        of sockets runs this loop. Every member gets the same message object (read-only).
        """
        boxes = self._boxes
        now = time.monotonic()
        delivered = 0
        for channel in channels:
            box = boxes.get(channel)
            if box is None:
                if known_only:
                    continue
                box = boxes[channel] = Mailbox()
            deliver = box.deliver
            if deliver is not None:
                if deliver(message):
                    delivered += 1
                else:
                    self.stats.dropped += 1
                continue
            if len(box._items) >= self.capacity:
                box.drop_expired(now)
                if len(box._items) >= self.capacity:
                    self.stats.dropped += 1
                    continue
            box.put(message, now + self.expiry)
            delivered += 1
        self.stats.delivered += delivered
        return delivered

    async def get(self, channel: str) -> Message:
        box = self.box(channel)
        if box.deliver is not None:
            raise RuntimeError(f"channel {channel!r} has a subscriber: receive() cannot read it")
        return await box.get()

    def subscribe(self, channel: str, deliver: Deliver) -> None:
        self.stats.dropped += self.box(channel).subscribe(deliver)

    def remove(self, channel: str) -> None:
        self._boxes.pop(channel, None)

    def channels(self) -> list[str]:
        return list(self._boxes)

    def clear(self) -> None:
        self._boxes.clear()

    def fail_all(self, error: BaseException) -> None:
        for box in self._boxes.values():
            box.wake_with_error(error)


class ChannelLayer(abc.ABC):
    """Passes messages between consumers, in this process or (Redis) across processes.

    The vocabulary follows the ASGI channel layer spec that Django Channels users know.
    A message is a dict with a string "type" and JSON-serialisable values.
    """

    backend: str = "abstract"

    def __init__(self, *, capacity: int = 100, expiry: float = 60, group_expiry: float = 86400) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if expiry <= 0 or group_expiry <= 0:
            raise ValueError("expiry and group_expiry must be positive")
        self.capacity = capacity
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.process_id = new_token(6)
        self.stats = LayerStats()
        self.local = LocalMailboxes(capacity=capacity, expiry=expiry, stats=self.stats)

    async def start(self) -> None:
        """Open connections and start background work; called once before use."""

    @abc.abstractmethod
    async def send(self, channel: str, message: Message) -> None:
        """Send a message to one channel; raise ChannelFull when it holds `capacity` messages."""

    @abc.abstractmethod
    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on a channel nobody subscribed to (workers, tests)."""

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new, unique channel name owned by this process."""
        validate_group_name(prefix)
        name = f"{prefix}.{self.process_id}!{new_token()}"
        self.local.box(name)
        return name

    def subscribe(self, channel: str, deliver: Deliver) -> None:
        """Push every message for `channel` (one of this process's, from new_channel()) to
        `deliver`, in order, as it arrives, starting with any sent before this call.

        The one way a consumer receives. `deliver` runs synchronously inside whatever delivered
        the message (a local send, a group_send, the Redis inbox reader): it must not block or
        raise, and must treat the message as read-only (group members share one object). It
        returns False when it cannot take the message (its own queue is full): the message is
        dropped and counted, and send() raises ChannelFull. A channel has one subscriber, until
        release_channel().
        """
        if process_of(validate_channel_name(channel)) != self.process_id:
            raise InvalidNameError(f"only this process's channels (from new_channel()) can be subscribed: {channel!r}")
        self.local.subscribe(channel, deliver)

    async def release_channel(self, channel: str) -> None:
        """Forget a channel of this process (its socket has closed); queued messages are dropped."""
        self.local.remove(channel)

    @abc.abstractmethod
    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel to a group (or renew its membership)."""

    @abc.abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group; a no-op if it is not a member."""

    @abc.abstractmethod
    async def group_send(self, group: str, message: Message) -> None:
        """Send a message to every member of a group; full members silently miss it."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Drop every channel, message and group of this layer (tests and resets)."""

    async def close(self) -> None:
        """Stop background work and close connections this layer opened."""

    async def health(self) -> LayerHealth:
        """Whether the layer can pass messages right now."""
        return LayerHealth(ok=True, backend=self.backend)

    if not TYPE_CHECKING:  # names 0.2 removed: a clear error for old host code (removed.py)
        set_listener = gone("set_listener")
        set_taker = gone("set_taker")
        receive_nowait = gone("receive_nowait")
