"""This process's side of routing (issue #16): presence of its consoles, auto-assignment,
reassignment on silence and transfers. The shared state and its atomic changes are in
store/routing*.py; AgentConsumer only dispatches here.

Assignment runs when something changes (a conversation queued: every process hears
`agents.queue_added`; an agent here comes online, frees a slot or sets a status) and on the
tick as a backstop; the store makes each run atomic, so processes racing give nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any, Literal, Protocol, TypedDict

from .. import messages
from ..chat.holding import deliver
from ..config import AgentSettings
from ..errors import ChatbotServerError
from ..layers import ChannelLayer
from ..messages import AGENTS_GROUP, QUEUE_GROUP, conversation_group
from ..protocol import error_frame, frame
from ..store.base import ConversationStore
from ..store.handoff import HandoffQueue, QueueUnavailableError
from ..store.routing import AgentLoad, AgentRouting, Status
from .directory import AgentDirectory

log = logging.getLogger("chatbot_server.agents.routing")

_REASSIGNED_USER_TEXT = "抱歉让您久等了,正在为您转接其他客服,请稍候。"
_TRANSFERRED_TEXT = "已为您转接至{name},请稍候。"
_REFUSED = {
    "offline": "对方当前不在线或处于暂离状态,无法转接。",
    "full": "对方接待的会话已满,暂时无法转接。",
    "same": "不能转接给自己。",
    "not_yours": "这个会话不由您接待。",
}


class AgentAssigned(TypedDict):
    """A conversation was given to the agent (auto-assignment or transfer). Sent by Router to
    agent_group(username); handled by AgentConsumer.agent_assigned."""

    type: Literal["agent.assigned"]
    conversation: str


class AgentClosed(TypedDict):
    """A conversation was taken from the agent (`reason`: reassigned | transferred). Sent by Router
    to agent_group(username); handled by AgentConsumer.agent_closed."""

    type: Literal["agent.closed"]
    conversation: str
    reason: str


class AgentsPresence(TypedDict):
    """Who is online, away, how busy. Sent by Router to AGENTS_GROUP; handled by
    AgentConsumer.agents_presence (as the console frame `agents`)."""

    type: Literal["agents.presence"]
    agents: list[dict[str, Any]]


def agent_group(username: str) -> str:
    """The layer group of every console of one agent (usernames may hold any character)."""
    return "agentof." + hashlib.sha256(username.encode()).hexdigest()[:24]


class Console(Protocol):
    """What the router needs of an agent's console socket (AgentConsumer)."""

    async def send_json(self, payload: object) -> None: ...

    async def group_discard(self, group: str) -> None: ...


class Router:
    """Presence of this process's consoles, and the routing actions started from here."""

    def __init__(
        self,
        routing: AgentRouting,
        *,
        settings: AgentSettings,
        queue: HandoffQueue,
        directory: AgentDirectory,
        store: ConversationStore,
        layer: ChannelLayer,
    ) -> None:
        self.routing = routing
        self.settings = settings
        self.queue = queue
        self.directory = directory
        self.store = store
        self.layer = layer
        self.mode = settings.routing
        self.auto = settings.routing == "auto"
        self._capacity = {a.username: a.capacity or settings.capacity for a in settings.accounts}
        self._consoles: dict[str, int] = {}  # username -> consoles open here
        waits = [settings.presence_ttl / 3, 5.0] + ([settings.assign_timeout / 3] if settings.assign_timeout else [])
        self.interval = max(0.05, min(waits))
        self._channel = ""
        self._ticker: asyncio.Task[None] | None = None
        self._kicks: set[asyncio.Task[None]] = set()

    def capacity(self, username: str) -> int:
        return self._capacity.get(username, self.settings.capacity)

    def name(self, username: str) -> str:
        agent = self.directory.get(username)
        return username if agent is None else agent.name

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._channel = await self.layer.new_channel("agents.routing")
        self.layer.subscribe(self._channel, self._heard)
        await self.layer.group_add(AGENTS_GROUP, self._channel)
        self._ticker = asyncio.create_task(self._tick_forever(), name="agents-routing")

    async def stop(self) -> None:
        tasks = [t for t in (self._ticker, *self._kicks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel:
            with contextlib.suppress(ChatbotServerError):
                await self.layer.group_discard(AGENTS_GROUP, self._channel)
            await self.layer.release_channel(self._channel)

    def _heard(self, message: Any) -> bool:
        # Another process (or this one) queued a conversation: try to give it to someone.
        if self.auto and message.get("type") == "agents.queue_added":
            self.kick_soon()
        return True

    def kick_soon(self) -> None:
        """Run assign() in the background (from a synchronous layer callback)."""
        task = asyncio.get_running_loop().create_task(self.kick())
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    async def _tick_forever(self) -> None:
        joined = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.interval)  # a period, not a synchronisation
            try:
                await self.tick()
                if asyncio.get_running_loop().time() - joined > self.layer.group_expiry / 2:
                    await self.layer.group_add(AGENTS_GROUP, self._channel)
                    joined = asyncio.get_running_loop().time()
            except (QueueUnavailableError, ChatbotServerError) as exc:
                log.info("routing.tick_failed error=%s", exc)
            except Exception:
                log.exception("routing.tick_crashed")

    async def tick(self) -> None:
        """Renew this process's agents, take back silent assignments, assign what waits."""
        await self.routing.renew(list(self._consoles))
        if self.auto and self.settings.assign_timeout > 0:
            for taken in await self.routing.silent(self.settings.assign_timeout):
                await self._reassigned(taken.conversation, taken.agent, taken.entry.item())
        await self.kick()

    # ------------------------------------------------------------ presence
    async def opened(self, username: str, *, assign: bool = True) -> None:
        """A console of `username` loaded here (raises QueueUnavailableError if presence could
        not be written: the console retries, and nothing was counted)."""
        await self.routing.connect(username, self.capacity(username))
        self._consoles[username] = self._consoles.get(username, 0) + 1
        try:
            await self.changed(assign=assign)
        except ChatbotServerError as exc:  # counted and present: the others hear at the next change
            log.info("routing.presence_unannounced agent=%s error=%s", username, exc)

    async def closed(self, username: str) -> None:
        left = self._consoles.get(username, 0) - 1
        if left > 0:
            self._consoles[username] = left
            return
        self._consoles.pop(username, None)
        try:
            await self.routing.disconnect(username)
            await self.changed(assign=False)
        except (QueueUnavailableError, ChatbotServerError) as exc:  # the TTL ends it anyway
            log.info("routing.disconnect_failed agent=%s error=%s", username, exc)

    async def set_status(self, username: str, status: Status) -> None:
        await self.routing.set_status(username, status)
        await self.changed()

    async def changed(self, *, assign: bool = True) -> None:
        """Tell every console who is online now; give waiting conversations to whoever is free."""
        await self.publish_presence()
        if assign:
            await self.kick()

    async def roster_rows(self) -> list[dict[str, Any]]:
        """Every present agent with their name, status, load and capacity (the `agents` list)."""
        return self._rows(await self.routing.roster())

    def _rows(self, roster: list[AgentLoad]) -> list[dict[str, Any]]:
        return [
            {
                "username": a.username,
                "name": self.name(a.username),
                "status": a.status,
                "load": a.load,
                "capacity": a.capacity,
            }
            for a in roster
        ]

    async def publish_presence(self) -> None:
        message: AgentsPresence = {"type": "agents.presence", "agents": self._rows(await self.routing.roster())}
        await self.layer.group_send(AGENTS_GROUP, message)

    # ------------------------------------------------------------ assignment
    async def kick(self) -> None:
        """Give waiting conversations to free online agents (auto routing only)."""
        if not self.auto:
            return
        try:
            assigned = await self.routing.assign(track=self.settings.assign_timeout > 0)
        except QueueUnavailableError as exc:
            log.info("routing.assign_unavailable error=%s", exc)
            return
        try:
            for a in assigned:
                log.info("routing.assigned agent=%s conversation=%s", a.agent, a.conversation[:8])
                await self._give(a.conversation, a.agent)
            if assigned:
                gone = [a.conversation for a in assigned]
                await self.layer.group_send(AGENTS_GROUP, messages.agents_queue_removed(gone))
                await self.layer.group_send(QUEUE_GROUP, messages.queue_changed())
                await self.publish_presence()
        except ChatbotServerError as exc:
            # Assigned all the same: the agent's console lists it at its next load (hello.active).
            log.warning("routing.announce_failed error=%s", exc)

    async def _give(self, conversation: str, username: str, *, joined: bool = True) -> None:
        name = self.name(username)
        assigned: AgentAssigned = {"type": "agent.assigned", "conversation": conversation}
        await self.layer.group_send(agent_group(username), assigned)
        await self.layer.group_send(conversation_group(conversation), messages.conv_mode(conversation, "agent", name))
        if joined:
            text = f"人工客服已接入,{name}正在为您服务。"
            out = frame("system", text, talk=False, event="agent_joined", agent=name)
            await deliver(self.store, self.layer, conversation, out, show=True)

    async def claim(self, console: Console, conversation: str, username: str, request_id: str) -> bool:
        """A claim by hand, within the agent's capacity; False (and a frame saying why) if refused."""
        won = await self.routing.claim(conversation, username, self.capacity(username), request_id)
        if won is None:
            await console.send_json(error_frame("at_capacity", "您当前接待的会话已达上限,请先结束其他会话。"))
            return False
        return won

    async def replied(self, conversation: str) -> None:
        """The holding agent answered: no reassignment on silence any more."""
        if self.auto and self.settings.assign_timeout > 0:
            await self.routing.replied(conversation)

    async def _reassigned(self, conversation: str, username: str, item: messages.QueueItem) -> None:
        log.info("routing.reassigned agent=%s conversation=%s", username, conversation[:8])
        closed: AgentClosed = {"type": "agent.closed", "conversation": conversation, "reason": "reassigned"}
        await self.layer.group_send(agent_group(username), closed)
        notice = frame("system", _REASSIGNED_USER_TEXT, talk=False, event="reassigned")
        await deliver(self.store, self.layer, conversation, notice)
        # The user's socket waits again: back to "bot", then queued as if 转人工 was pressed (the
        # entry is already back in its old place, so that only tells the position).
        await self.layer.group_send(conversation_group(conversation), messages.conv_mode(conversation, "bot"))
        await self.layer.group_send(conversation_group(conversation), messages.conv_handoff(conversation))
        await self.layer.group_send(AGENTS_GROUP, messages.agents_queue_added(item))
        await self.layer.group_send(QUEUE_GROUP, messages.queue_changed())  # those behind it move down
        await self.publish_presence()

    async def transfer(self, console: Console, conversation: str, username: str, to: str) -> None:
        """Hand a conversation the agent holds to an online colleague with a free slot."""
        result = await self.routing.transfer(conversation, username, to)
        if result != "ok":
            await console.send_json(dict(error_frame("transfer_refused", _REFUSED[result]), reason=result))
            return
        log.info("routing.transferred from=%s to=%s conversation=%s", username, to, conversation[:8])
        closed: AgentClosed = {"type": "agent.closed", "conversation": conversation, "reason": "transferred"}
        await self.layer.group_send(agent_group(username), closed)
        notice = frame("system", _TRANSFERRED_TEXT.format(name=self.name(to)), talk=False, event="transferred")
        await deliver(self.store, self.layer, conversation, notice)
        await self._give(conversation, to, joined=False)
        await self.publish_presence()
        await self.kick()  # the sender has a free slot now
