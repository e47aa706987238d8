"""Agent presence, capacity and assignment on top of the handoff queue (issue #16, routing).

An agent is online or away while some process renews their presence (every open console socket's
process does, on its keeper tick); when nobody renews it for `ttl` seconds (closed tab, dead
process) they are offline. Assignment gives waiting conversations, oldest first, to the
least-busy online agent with a free slot (ties: the one whose last assignment is oldest); it is
atomic: one Lua script in Redis (routing_redis.py), no await between check and set in memory.
"""

from __future__ import annotations

import abc
import asyncio
import math
from dataclasses import dataclass
from typing import Literal

from .handoff import MemoryHandoffQueue, QueueEntry
from .handoff_base import now_ms

Status = Literal["online", "away"]
#: Weight of the newest wait in the moving average of waits (queued → assigned or claimed).
ALPHA = 0.2


@dataclass(frozen=True)
class AgentLoad:
    """One present agent (online or away) with their capacity and the chats they hold."""

    username: str
    status: Status
    load: int
    capacity: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load) if self.status == "online" else 0


@dataclass(frozen=True)
class Assignment:
    """A waiting conversation given to an agent."""

    conversation: str
    agent: str


@dataclass(frozen=True)
class Reassigned:
    """An auto-assigned conversation taken back from an agent who did not reply in time."""

    conversation: str
    agent: str
    entry: QueueEntry


TransferResult = Literal["ok", "not_yours", "offline", "full", "same"]


def estimate(average_ms: float | None, position: int, free: int, online: int) -> int | None:
    """Seconds a user at `position` may wait: the moving average of recent waits times the place,
    shared among the free slots of online agents (at least one); None without agents or data."""
    if average_ms is None or online == 0 or position < 1:
        return None
    return math.ceil(average_ms / 1000 * position / max(1, free))


class AgentRouting(abc.ABC):
    """Presence, capacity and assignment, shared by every process on one backend."""

    def __init__(self, *, ttl: float = 30.0, process: str = "") -> None:
        self.ttl = ttl
        self.process = process
        # The estimate's inputs being read: every waiting socket here that asks meanwhile shares it.
        self._basis: asyncio.Future[tuple[float | None, int, int]] | None = None

    @abc.abstractmethod
    async def connect(self, agent: str, capacity: int) -> None:
        """A console of `agent` opened in this process: they are online (and present while renewed)."""

    @abc.abstractmethod
    async def disconnect(self, agent: str) -> None:
        """The last console of `agent` in this process closed."""

    @abc.abstractmethod
    async def renew(self, agents: list[str]) -> None:
        """This process still has consoles of these agents open."""

    @abc.abstractmethod
    async def set_status(self, agent: str, status: Status) -> None:
        """The agent chose online or away."""

    @abc.abstractmethod
    async def roster(self) -> list[AgentLoad]:
        """Every present agent (online or away), by username."""

    async def available(self) -> list[AgentLoad]:
        """The online agents with their capacity and current load."""
        return [a for a in await self.roster() if a.status == "online"]

    async def anyone_online(self) -> bool:
        """Whether at least one agent is online (cheap enough for every handoff request)."""
        return bool(await self.available())

    @abc.abstractmethod
    async def assign(self, *, track: bool = True) -> list[Assignment]:
        """Give waiting conversations to online agents with free slots (atomic); `track`: remember
        them until their agent's first reply, for silent() (off when nothing is reassigned)."""

    @abc.abstractmethod
    async def claim(self, conversation: str, agent: str, capacity: int, request_id: str = "") -> bool | None:
        """Like HandoffQueue.claim, but None (and nothing claimed) when `agent` holds `capacity` chats."""

    @abc.abstractmethod
    async def replied(self, conversation: str) -> None:
        """The holding agent answered: the conversation is no longer reassigned on silence."""

    @abc.abstractmethod
    async def silent(self, timeout: float) -> list[Reassigned]:
        """Put back in the queue (in their old place) the conversations assigned more than
        `timeout` seconds ago without a reply; their agents are set away."""

    @abc.abstractmethod
    async def transfer(self, conversation: str, agent: str, to: str) -> TransferResult:
        """Move a conversation `agent` holds to `to` (online, with a free slot)."""

    @abc.abstractmethod
    async def wait_average(self) -> float | None:
        """The moving average of recent waits in ms, if any was measured."""

    async def estimated_wait(self, position: int) -> int | None:
        """Seconds a user at `position` may still wait (see estimate()), None if unknown.

        A queue change makes every waiting socket ask at once: those that ask while a read of
        the average and of who is free is under way share it, instead of two reads each."""
        basis = self._basis
        if basis is None or basis.done():
            basis = self._basis = asyncio.ensure_future(self._read_basis())
        average, free, online = await asyncio.shield(basis)
        return estimate(average, position, free, online)

    async def _read_basis(self) -> tuple[float | None, int, int]:
        online = await self.available()
        return await self.wait_average(), sum(a.free for a in online), len(online)


def best(agents: list[AgentLoad], last: dict[str, int]) -> AgentLoad | None:
    """The least-busy online agent with a free slot; ties: the one idle longest, then by name."""
    free = [a for a in agents if a.free > 0]
    return min(free, key=lambda a: (a.load, last.get(a.username, 0), a.username)) if free else None


class MemoryRouting(AgentRouting):
    """Routing for one process, on the memory queue (each change runs without an await)."""

    def __init__(self, queue: MemoryHandoffQueue, *, ttl: float = 30.0, process: str = "") -> None:
        super().__init__(ttl=ttl, process=process)
        self.queue = queue
        self._status: dict[str, Status] = {}
        self._expiry: dict[str, int] = {}
        self._capacity: dict[str, int] = {}
        self._last: dict[str, int] = {}  # when each agent was last given a conversation (ms)
        self._assigned: dict[str, tuple[str, int, QueueEntry]] = {}  # conversation -> agent, at, entry
        self._average: float | None = None

    # The memory queue's state is read and changed directly: no await may split a check from its change.
    def _load(self, agent: str) -> int:
        return sum(1 for a in self.queue._claims.values() if a == agent)

    def _present(self) -> list[AgentLoad]:
        now = now_ms()
        return [
            AgentLoad(u, self._status.get(u, "online"), self._load(u), self._capacity.get(u, 1))
            for u, expiry in sorted(self._expiry.items())
            if expiry >= now
        ]

    def _waited(self, since: int) -> None:
        wait = max(0, now_ms() - since)
        self._average = wait if self._average is None else ALPHA * wait + (1 - ALPHA) * self._average

    async def connect(self, agent: str, capacity: int) -> None:
        self._capacity[agent] = capacity
        self._status[agent] = "online"
        self._expiry[agent] = now_ms() + int(self.ttl * 1000)

    async def disconnect(self, agent: str) -> None:
        self._expiry.pop(agent, None)

    async def renew(self, agents: list[str]) -> None:
        for agent in agents:
            self._expiry[agent] = now_ms() + int(self.ttl * 1000)

    async def set_status(self, agent: str, status: Status) -> None:
        self._status[agent] = status

    async def roster(self) -> list[AgentLoad]:
        return self._present()

    async def assign(self, *, track: bool = True) -> list[Assignment]:
        now = now_ms()
        agents = {a.username: a for a in self._present()}
        done = []
        for conversation, entry in list(self.queue._waiting.items()):
            if self.queue._lapsed(conversation, now):
                continue
            chosen = best(list(agents.values()), self._last)
            if chosen is None:
                break
            self.queue._drop(conversation)
            self.queue._claims[conversation] = chosen.username
            if track:
                self._assigned[conversation] = (chosen.username, now, entry)
            self._last[chosen.username] = now
            self._waited(entry.since)
            agents[chosen.username] = AgentLoad(chosen.username, "online", chosen.load + 1, chosen.capacity)
            done.append(Assignment(conversation, chosen.username))
        return done

    async def claim(self, conversation: str, agent: str, capacity: int, request_id: str = "") -> bool | None:
        entry = self.queue._waiting.get(conversation)
        if entry is not None and self._load(agent) >= capacity:
            return None
        won = await self.queue.claim(conversation, agent, request_id)  # runs without suspending
        if won and entry is not None:
            self._last[agent] = now_ms()
            self._waited(entry.since)
        return won

    async def replied(self, conversation: str) -> None:
        self._assigned.pop(conversation, None)

    async def silent(self, timeout: float) -> list[Reassigned]:
        deadline = now_ms() - int(timeout * 1000)
        taken = []
        for conversation, (agent, at, entry) in list(self._assigned.items()):
            if at > deadline:
                continue
            del self._assigned[conversation]
            if self.queue._claims.get(conversation) != agent:
                continue  # ended or transferred meanwhile
            del self.queue._claims[conversation]
            self.queue._claim_ids.pop(conversation, None)
            self.queue._waiting[conversation] = entry
            # Its old place; equal times by id, as Redis orders equal scores.
            self.queue._waiting = dict(sorted(self.queue._waiting.items(), key=lambda i: (i[1].since, i[0])))
            self.queue._deadline[conversation] = now_ms() + int(self.queue.grace * 1000)
            self._status[agent] = "away"
            taken.append(Reassigned(conversation, agent, entry))
        return taken

    async def transfer(self, conversation: str, agent: str, to: str) -> TransferResult:
        if self.queue._claims.get(conversation) != agent:
            return "not_yours"
        if to == agent:
            return "same"
        target = next((a for a in self._present() if a.username == to and a.status == "online"), None)
        if target is None:
            return "offline"
        if target.free <= 0:
            return "full"
        self.queue._claims[conversation] = to
        self.queue._claim_ids.pop(conversation, None)
        self._assigned.pop(conversation, None)
        self._last[to] = now_ms()
        return "ok"

    async def wait_average(self) -> float | None:
        return self._average
