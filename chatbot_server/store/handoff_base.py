"""The handoff queue's interface and what both backends share: entries, the keeper, fault logging.

An entry lives while someone waits for it: each process renews the deadline of the entries its
sockets wait on (the keeper, every `interval` seconds), so the entry of a user who has gone —
closed the page, or their process died — lapses `grace` seconds later and is swept. Every
waiting count (positions, the per-address cap, the consoles' snapshot) skips lapsed entries.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .. import messages
from ..errors import StoreUnavailableError
from ..messages import AGENTS_GROUP, QUEUE_GROUP

log = logging.getLogger("chatbot_server.handoff")

Mode = Literal["bot", "queued", "agent"]
Status = Literal["added", "waiting", "claimed", "refused"]

#: Seconds a queue call on a user-facing path may take before it counts as failed: a hung Redis
#: (SIGSTOP, a black hole) must not hold a user's 转人工 or an agent's console for the client's
#: socket timeout times its retries (over 10 s).
DEADLINE = 2.0
#: Entries swept per call at most, so one sweep never holds Redis for long (the next goes on).
SWEEP_LIMIT = 500


class QueueUnavailableError(StoreUnavailableError):
    """The handoff queue's backend failed or did not answer within DEADLINE; `kind` says how
    (timeout, connection, oom, error)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"handoff queue unavailable ({kind}){': ' + detail if detail else ''}")


@dataclass(frozen=True)
class QueueEntry:
    """One waiting conversation."""

    conversation: str
    since: int
    preview: str

    def item(self) -> messages.QueueItem:
        """The entry as consoles and layer messages carry it."""
        return {"conversation": self.conversation, "since": self.since, "preview": self.preview}


@dataclass(frozen=True)
class Enqueued:
    """What enqueue() did: `added` a new entry, found it `waiting` already, found it `claimed` by
    an agent, or `refused` it (the address has `max_per_ip` entries waiting). `position` is the
    1-based place among live entries (0 unless added or waiting); `changed`: a waiting entry got
    a new preview; `expired`: lapsed entries swept on the way (for the consoles)."""

    status: Status
    position: int = 0
    entry: QueueEntry | None = None
    changed: bool = False
    expired: tuple[str, ...] = ()


class Waiter(Protocol):
    """Someone waiting for a conversation (a chat socket's Handoff); asked by every keeper tick."""

    def waits_for(self, conversation: str) -> bool: ...

    async def requeue(self, conversation: str) -> None:
        """The queue lost the entry this waiter waits on: ask for a human again."""


class RoutingView(Protocol):
    """What the chat side may ask of agent routing (store/routing.py's AgentRouting)."""

    async def estimated_wait(self, position: int) -> int | None: ...

    async def anyone_online(self) -> bool: ...


class Publisher(Protocol):
    """Where the keeper announces swept entries (the application's channel layer)."""

    async def group_send(self, group: str, message: Any) -> None: ...


@dataclass
class FaultLog:
    """One warning per kind of failure while it lasts, one line when it ends (not one per call)."""

    failing: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def failed(self, error: QueueUnavailableError) -> None:
        self.counts[error.kind] = self.counts.get(error.kind, 0) + 1
        if error.kind not in self.failing:
            self.failing.add(error.kind)
            log.warning("handoff.queue_unavailable kind=%s error=%s", error.kind, error)

    def ok(self) -> None:
        if self.failing:
            log.info("handoff.queue_recovered after=%s", ",".join(sorted(self.failing)))
            self.failing.clear()


def now_ms() -> int:
    return int(time.time() * 1000)


class HandoffQueue(abc.ABC):
    """Waiting conversations in arrival order, and claims of conversations by agents."""

    backend = "abstract"

    def __init__(self, *, grace: float = 120.0, max_per_ip: int = 2) -> None:
        self.grace = grace
        self.max_per_ip = max_per_ip
        # The keeper renews often enough that a live entry never comes near its deadline.
        self.interval = min(grace / 4, 10.0)
        self.faults = FaultLog()
        self._waiters: dict[str, list[Waiter]] = {}
        self._publisher: Publisher | None = None
        self._keeper: asyncio.Task[None] | None = None
        # Agent presence and the wait estimate, set by setup_agents (agents/routes.py).
        self.routing: RoutingView | None = None

    async def estimated_wait(self, position: int) -> int | None:
        """Seconds a user at `position` may still wait, or None when there is no estimate."""
        if self.routing is None:
            return None
        try:
            return await self.routing.estimated_wait(position)
        except QueueUnavailableError:
            return None  # an estimate is a courtesy: the position still goes out

    async def anyone_online(self) -> bool:
        """Whether an agent is online now (True without routing: every console sees the queue).
        Raises QueueUnavailableError when presence cannot be read."""
        return True if self.routing is None else await self.routing.anyone_online()

    def publish_to(self, publisher: Publisher) -> None:
        """Announce swept entries through `publisher` (set once by the composition root)."""
        self._publisher = publisher

    async def start(self) -> None:
        """Open connections and start the keeper."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name=f"handoff-keeper-{self.backend}")

    async def close(self) -> None:
        """Stop the keeper and close what start opened."""
        task, self._keeper = self._keeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ waiting
    def keep(self, conversation: str, waiter: Waiter) -> None:
        """Renew the conversation's entry while `waiter.waits_for(conversation)`."""
        waiters = self._waiters.setdefault(conversation, [])
        if waiter not in waiters:
            waiters.append(waiter)

    def kept(self) -> list[str]:
        """The conversations someone here still waits for (forgetting the others)."""
        live = []
        for conversation, waiters in list(self._waiters.items()):
            waiters[:] = [w for w in waiters if w.waits_for(conversation)]
            if waiters:
                live.append(conversation)
            else:
                del self._waiters[conversation]
        return live

    async def tick(self) -> list[str]:
        """One keeper round: renew what is waited for here, sweep what lapsed, announce it."""
        live = self.kept()
        if live:
            for conversation in await self.touch(live):
                # Lost, not taken (a failover dropped what replication had not copied yet): the
                # user still waits, so the entry is added again, in its old place.
                log.warning("handoff.entry_lost conversation=%s (queued again)", conversation[:8])
                for waiter in list(self._waiters.get(conversation, ())):
                    await waiter.requeue(conversation)
        expired = await self.sweep()
        if expired and self._publisher is not None:
            await self._publisher.group_send(AGENTS_GROUP, messages.agents_queue_removed(expired))
            await self._publisher.group_send(QUEUE_GROUP, messages.queue_changed())
        return expired

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # a period, not a synchronisation
            try:
                await self.tick()
            except QueueUnavailableError:
                pass  # logged once per outage by the backend; the next tick tries again
            except Exception:
                log.exception("handoff.keeper_failed")

    # ------------------------------------------------------------ the backend
    @abc.abstractmethod
    async def enqueue(self, conversation: str, preview: str, *, ip: str = "", since: int | None = None) -> Enqueued:
        """Put a conversation in the queue (once), unless an agent holds it or `ip` is at its cap;
        `since` (Unix ms) puts a lost entry back in its old place."""

    @abc.abstractmethod
    async def touch(self, conversations: Sequence[str]) -> list[str]:
        """Someone still waits for these: their entries live `grace` seconds from now. Returns
        those that are neither waiting nor claimed (their entries were lost)."""

    @abc.abstractmethod
    async def sweep(self) -> list[str]:
        """Remove entries whose deadline passed; the conversations removed."""

    @abc.abstractmethod
    async def position(self, conversation: str) -> int | None:
        """The 1-based place among live entries, or None if not waiting."""

    @abc.abstractmethod
    async def waiting(self) -> list[QueueEntry]:
        """Every live waiting conversation, first come first."""

    @abc.abstractmethod
    async def claim(self, conversation: str, agent: str, request_id: str = "") -> bool:
        """Give a waiting conversation to `agent`; False if it is not waiting (someone else won).

        Idempotent for one `request_id`: run again (a retry after a lost reply), a claim that
        succeeded returns True again, and never gives the conversation to anyone else."""

    @abc.abstractmethod
    async def agent_of(self, conversation: str) -> str | None:
        """The username of the agent holding the conversation."""

    @abc.abstractmethod
    async def active(self, agent: str) -> list[str]:
        """The conversations `agent` holds."""

    @abc.abstractmethod
    async def finish(self, conversation: str, agent: str) -> bool:
        """`agent` lets go of the conversation (ended or handed back to the bot)."""

    @abc.abstractmethod
    async def cancel(self, conversation: str) -> bool:
        """The user no longer waits (取消排队): remove the entry; False if it was not waiting."""

    async def mode(self, conversation: str) -> tuple[Mode, str | None]:
        """Who answers the conversation now: the bot, nobody yet (queued) or an agent."""
        agent = await self.agent_of(conversation)
        if agent is not None:
            return "agent", agent
        if await self.position(conversation) is not None:
            return "queued", None
        return "bot", None
