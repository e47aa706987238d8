"""The conversation-holding protocol: hold, let go, take over, deliver.

A conversation is *held* by at most one socket at a time, in one process, which is then the single
writer of its frames (the store's owner). Another socket carries it on by taking it over: a socket
of this process is asked directly; one of another process through the layer (conv.takeover to the
conversation's group, answered by conv.released once it wrote everything out). Frames made where
the conversation is not held (an agent's reply) are *delivered*: appended directly if nobody holds
it, else sent to the holder (conv.deliver), which appends and shows them.

Used by the chat consumer (which holds) and the agent console (which delivers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .. import messages
from ..layers import ChannelLayer, Message
from ..messages import conversation_group, watch_group
from ..protocol import CLOSE_TAKEN_OVER, STREAM_FRAMES, Frame, frame
from ..store import ConversationStore
from .streams import Streams

log = logging.getLogger("chatbot_server.chat")

# A socket whose conversation was carried on by a newer socket closes with CLOSE_TAKEN_OVER: the
# page must not reconnect by itself, or two tabs would take the conversation from each other.
_TAKEN_OVER_TEXT = "此会话已在其他窗口继续。"

_NO_IDS: frozenset[str] = frozenset()


class HoldingSocket(Protocol):
    """What the protocol needs of the socket that holds (ChatConsumer is one)."""

    @property
    def channel_name(self) -> str: ...

    async def group_add(self, group: str) -> None: ...

    async def group_discard(self, group: str) -> None: ...

    async def send_json(self, payload: object) -> None: ...

    async def close(self, *, code: int = ..., message: str = ..., notify: bool = ...) -> None: ...

    async def emit(self, out: Frame) -> None:
        """Record a frame of the held conversation and send it."""
        ...

    def pending_messages(self) -> list[Message]:
        """Layer messages still waiting for the socket (it is going away)."""
        ...

    def yield_answer(self, reply_to: str) -> None:
        """Drop this socket's own answer to `reply_to` unseen: another socket's turn writes it."""

    async def settle(self) -> None:
        """Wait until the layer messages the socket is handling are handled."""
        ...


class Holders:
    """The holdings of this process, by conversation: a takeover within one process is direct."""

    def __init__(self) -> None:
        self._by_conversation: dict[str, Holding] = {}

    def __len__(self) -> int:
        return len(self._by_conversation)

    def get(self, conversation: str) -> Holding | None:
        return self._by_conversation.get(conversation)

    def put(self, conversation: str, holding: Holding) -> None:
        self._by_conversation[conversation] = holding

    def drop(self, conversation: str, holding: Holding) -> None:
        if self._by_conversation.get(conversation) is holding:
            del self._by_conversation[conversation]


async def deliver(
    store: ConversationStore, layer: ChannelLayer, conversation: str, out: Frame, *, show: bool = False
) -> int | None:
    """Append a frame made outside the conversation's socket: directly if no process holds it (its
    seq is returned), else through the layer to its holder, the single writer (None), which shows
    it to the agent consoles watching. `show`: show a directly appended frame to them too."""
    if out.get("type") in STREAM_FRAMES:  # shown, never stored: to whoever holds it now, if anyone
        await layer.group_send(conversation_group(conversation), messages.conv_deliver(conversation, out))
        return None
    stored = dict(out)
    seq = await store.append_if_unowned(conversation, stored)
    if seq is None:
        await layer.group_send(conversation_group(conversation), messages.conv_deliver(conversation, out))
    elif show:
        await layer.group_send(watch_group(conversation), messages.agent_frame(conversation, stored))  # type: ignore[arg-type]
    return seq


class Holding:
    """One socket's side of the protocol: which conversation it holds, and the takeover in flight."""

    __slots__ = (
        "_ack", "_early", "_relayed", "_wanted", "answering", "conversation", "holders", "holding", "inherited",
        "layer", "socket", "store", "streams", "takeover_timeout",
    )  # fmt: skip

    def __init__(
        self,
        socket: HoldingSocket,
        *,
        store: ConversationStore,
        layer: ChannelLayer,
        holders: Holders,
        takeover_timeout: float,
    ) -> None:
        self.socket = socket
        self.store = store
        self.layer = layer
        self.holders = holders
        self.takeover_timeout = takeover_timeout
        self.conversation = ""
        #: True while this socket holds the conversation: it alone appends its frames.
        self.holding = False
        #: Client message ids being answered right now (here, or by the previous holder).
        self.answering: set[str] | frozenset[str] = _NO_IDS  # a set once something is answered
        self.inherited: set[str] | frozenset[str] = _NO_IDS  # from the previous holder, at a takeover
        self._early: list[Frame] | None = None  # delivered to us before the takeover finished
        self._wanted = ""
        self._ack: asyncio.Future[messages.ConvReleased] | None = None
        #: Replies being written in the conversation (ours, or relayed from the socket we took it from).
        self.streams = Streams()
        self._relayed: asyncio.Event | None = None  # set by each relayed stream frame (wait_quiet)

    def start_answering(self, client_id: str) -> None:
        if isinstance(self.answering, frozenset):
            self.answering = set()
        self.answering.add(client_id)

    def done_answering(self, client_id: str) -> None:
        if isinstance(self.answering, set):
            self.answering.discard(client_id)

    def busy_with(self, client_id: str) -> bool:
        """Whether a message with this client id is being answered (here or by the previous holder)."""
        if client_id in self.answering or client_id in self.inherited:
            return True
        # A reply being written for it (relayed from another socket) proves someone answers it.
        return any(stream.reply_to == client_id for stream in self.streams.by_id.values())

    @property
    def wanted(self) -> str:
        """The conversation being taken over, or else the one held."""
        return self._wanted or self.conversation

    # ------------------------------------------------------------------ hold
    async def hold_new(self, conversation: str) -> None:
        """Hold a conversation just created (its id is unknown to anyone else)."""
        # Held at once, so that let_go() releases it even if joining its group fails (nothing can
        # be sent to the group before we join: nobody knows the id).
        self._hold(conversation)
        await self.socket.group_add(conversation_group(conversation))

    def _hold(self, conversation: str) -> None:
        self.conversation = conversation
        self.holding = True
        self.holders.put(conversation, self)

    async def let_go(self) -> None:
        """Stop holding the conversation: write it out, and pass frames still queued for us on."""
        if not self.holding:
            return
        conversation = self.conversation
        self.holding = False
        if self.holders.get(conversation) is self:
            self.holders.drop(conversation, self)
            try:
                await self.store.release(conversation)
            except Exception:
                log.exception("history.release_failed conversation=%s", conversation[:8])
        # A frame delivered to us while the release was being written is being passed on by our
        # inbox (on_deliver): let that finish while we are still in the group it may come back to.
        await self.socket.settle()
        await self.socket.group_discard(conversation_group(conversation))
        # Frames the layer already handed this socket would die with it: hand them on.
        for message in self.socket.pending_messages():
            if message.get("type") == "conv.deliver" and message.get("conversation") == conversation:
                await deliver(self.store, self.layer, conversation, message["frame"])

    async def take_over(self, conversation: str) -> None:
        """Become the conversation's holder; the old holder (any process) writes out and stops first."""
        # In the conversation's group before the old holder (here or elsewhere) lets go, so that
        # nothing it passes on after letting go is missed: a reply it is still writing goes on
        # through the group (a stream frame sent between its snapshot and our joining was lost).
        self._early = []
        self._wanted = conversation
        await self.socket.group_add(conversation_group(conversation))
        old = self.holders.get(conversation)
        if old is not None and old is not self:
            self.inherited = set(old.answering) | set(old.inherited)
            self.streams.inherit(old.streams.snapshots())  # copies: the old socket's turn goes on writing
            await old.give_up(conversation)
        try:
            previous = await self.store.acquire(conversation)
            if previous is not None:
                await self._ask_to_release(conversation, previous)
            await self.store.adopt(conversation)
        except BaseException:
            # The store did not answer in time (StoreUnavailableError: the caller degrades), the
            # layer failed, or the socket went away. Nobody holds it here; an acquire Redis runs
            # late is undone by the store. The group joined goes with the socket's channel
            # (meanwhile its messages are ignored: the conversation is neither held nor wanted).
            self._early = None
            self._wanted = ""
            self.store.abandon(conversation)
            raise
        self._hold(conversation)
        self._wanted = ""

    async def _ask_to_release(self, conversation: str, previous: str) -> None:
        self._ack = asyncio.get_running_loop().create_future()
        request = messages.conv_takeover(conversation, self.socket.channel_name, self.store.process_id)
        await self.layer.group_send(conversation_group(conversation), request)
        try:
            async with asyncio.timeout(self.takeover_timeout):
                released = await self._ack
            self.inherited = set(self.inherited) | {str(i) for i in released.get("answering", [])}
            self.streams.inherit(released.get("streams", []))
        except TimeoutError:
            # The old owner died: what it wrote out is all there is.
            log.warning("history.takeover_timeout conversation=%s owner=%s", conversation[:8], previous)
        finally:
            self._ack = None

    async def _relay(self, out: Frame) -> None:
        reply_to = out.get("reply_to")
        if reply_to is not None and reply_to in self.answering:
            # We started answering it again (its writer seemed gone: a holder between us let go),
            # but the writer lives: its answer goes on, ours is dropped unseen.
            self.socket.yield_answer(reply_to)
        for shown in self.streams.relay(out):
            await self.socket.send_json(shown)
        if self._relayed is not None:
            self._relayed.set()

    def _ended(self, out: Frame) -> bool:
        """A stored frame passes through: an answer written elsewhere that we knew of has ended.
        False if it is a copy of a streamed reply that ended here already (not stored twice)."""
        reply_to = out.get("reply_to")
        if reply_to is not None and reply_to in self.inherited:
            self.inherited = set(self.inherited) - {reply_to}
        return self.streams.ended(out)

    async def wait_quiet(self, idle: float, limit: float) -> bool:
        """A socket going away waits, still holding, while a reply that another socket's turn writes
        into its conversation goes on (at most `limit` s; a writer silent for `idle` s is taken for
        dead). A page that comes back meanwhile takes it over from us and inherits what we know —
        who is answering what, the text so far — instead of finding nobody holding and answering
        the question a second time. True if the writer went silent while we still hold."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.holding and (self.streams or self.inherited) and loop.time() < deadline:
            self._relayed = asyncio.Event()
            try:
                async with asyncio.timeout(min(idle, max(0.0, deadline - loop.time()))):
                    await self._relayed.wait()
            except TimeoutError:
                return self.holding and bool(self.streams or self.inherited)
            finally:
                self._relayed = None
        return False

    def forget_silent(self) -> None:
        """The writers of the replies we relay went silent (their process died after handing the
        conversation over): forget them, so their questions count as unanswered again."""
        for stream in list(self.streams.by_id.values()):
            if stream.reply_to not in self.answering:
                del self.streams.by_id[stream.id]
        self.inherited = _NO_IDS

    async def catch_up(self) -> None:
        """After a resume's replay: the replies being written so far, then the frames delivered
        while the takeover ran, in order (a page may see part of a stream twice: offsets say which)."""
        if self.streams:  # a reply that ended since the snapshot was taken is in the replay already
            for stored in await self.store.recent(self.conversation, 20):
                self.streams.ended(stored)  # type: ignore[arg-type]
        for out in self.streams.catch_up():
            await self.socket.send_json(out)
        early, self._early = self._early, None
        for out in early or ():
            if out.get("type") in STREAM_FRAMES:
                await self._relay(out)
            elif self._ended(out):
                await self.socket.emit(out)

    async def give_up(self, conversation: str) -> None:
        """Another socket of this process carries on this conversation: stop holding it, close."""
        if not self.holding or self.conversation != conversation:
            return
        self.holding = False
        self.holders.drop(conversation, self)
        await self._taken_over(conversation)

    async def _taken_over(self, conversation: str) -> None:
        await self.socket.group_discard(conversation_group(conversation))
        await self.socket.send_json(frame("system", _TAKEN_OVER_TEXT, talk=False, event="taken_over"))
        await self.socket.close(code=CLOSE_TAKEN_OVER, message="taken over")

    async def deliver(self, out: Frame) -> None:
        """Append a frame to our conversation while this socket does not hold it."""
        await deliver(self.store, self.layer, self.conversation, out)

    # ----------------------------------------------------- the layer messages
    async def on_takeover(self, message: messages.ConvTakeover) -> None:
        """conv.takeover: a socket on another process carries on our conversation."""
        conversation = message.get("conversation")
        if message.get("reply_channel") == self.socket.channel_name or message.get("process") == self.store.process_id:
            return
        if not self.holding or conversation != self.conversation:
            return
        answering = sorted(set(self.answering) | set(self.inherited))  # ours, and what we inherited
        self.holding = False
        self.holders.drop(conversation, self)
        try:
            await self.store.release(conversation)
        finally:
            released = messages.conv_released(conversation, answering, self.streams.snapshots())
            await self.layer.send(message["reply_channel"], released)
        await self._taken_over(conversation)

    def on_released(self, message: messages.ConvReleased) -> None:
        """conv.released: the old owner wrote the conversation out, the takeover may read the store."""
        ack = self._ack
        if ack is not None and not ack.done() and message.get("conversation") == self.wanted:
            ack.set_result(message)

    async def on_deliver(self, message: messages.ConvDeliver) -> None:
        """conv.deliver: a frame made elsewhere for the conversation we hold (or are taking over)."""
        delivered = message.get("frame")
        if not isinstance(delivered, dict) or message.get("conversation") != self.wanted:
            return
        out: Frame = dict(delivered)  # type: ignore[assignment]  # our own copy: the store sets its seq
        if self._early is not None:  # taking over: sent after the replay, in order
            self._early.append(out)
        elif out.get("type") in STREAM_FRAMES:  # a reply written on the socket we took over from
            if self.holding:  # (else dropped: its writer's next frame carries the whole text again)
                await self._relay(out)
        elif self.holding:
            if not self._ended(out):
                return
            if self._relayed is not None:
                self._relayed.set()
            await self.socket.emit(out)
            # An agent's answer is rare and precious: written at once, not after
            # history.write_interval (a crash of this process would lose it, though the user saw it).
            self.store.write_soon()
        else:  # we were letting go: pass it on, and whoever stores it shows it
            await deliver(self.store, self.layer, self.conversation, out, show=True)
