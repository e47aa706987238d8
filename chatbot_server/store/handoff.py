"""The handoff queue: conversations waiting for a human, and which agent holds which conversation.

Claims are atomic: in memory by running without an await, in Redis by one Lua script, so when
two agents claim the same conversation at once exactly one wins.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from ..ops.redis import redis_client

Mode = Literal["bot", "queued", "agent"]


@dataclass(frozen=True)
class QueueEntry:
    """One waiting conversation."""

    conversation: str
    since: int
    preview: str


class HandoffQueue(abc.ABC):
    """Waiting conversations in arrival order, and claims of conversations by agents."""

    backend = "abstract"

    async def start(self) -> None:
        """Open connections."""

    async def close(self) -> None:
        """Close what start opened."""

    @abc.abstractmethod
    async def enqueue(self, conversation: str, preview: str) -> int:
        """Put a conversation in the queue (once); its 1-based position, or 0 if an agent holds it."""

    @abc.abstractmethod
    async def position(self, conversation: str) -> int | None:
        """The 1-based queue position, or None if not waiting."""

    @abc.abstractmethod
    async def waiting(self) -> list[QueueEntry]:
        """Every waiting conversation, first come first."""

    @abc.abstractmethod
    async def claim(self, conversation: str, agent: str) -> bool:
        """Give a waiting conversation to `agent`; False if it is not waiting (someone else won)."""

    @abc.abstractmethod
    async def agent_of(self, conversation: str) -> str | None:
        """The username of the agent holding the conversation."""

    @abc.abstractmethod
    async def active(self, agent: str) -> list[str]:
        """The conversations `agent` holds."""

    @abc.abstractmethod
    async def finish(self, conversation: str, agent: str) -> bool:
        """`agent` lets go of the conversation (ended or handed back to the bot)."""

    async def mode(self, conversation: str) -> tuple[Mode, str | None]:
        """Who answers the conversation now: the bot, nobody yet (queued) or an agent."""
        agent = await self.agent_of(conversation)
        if agent is not None:
            return "agent", agent
        if await self.position(conversation) is not None:
            return "queued", None
        return "bot", None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | str) -> str:
    # Replies are bytes on the shared client; a host's own client may decode them already.
    return value.decode() if isinstance(value, bytes) else str(value)


class MemoryHandoffQueue(HandoffQueue):
    """The queue of one process."""

    backend = "memory"

    def __init__(self) -> None:
        self._waiting: dict[str, QueueEntry] = {}  # insertion order is arrival order
        self._claims: dict[str, str] = {}

    async def enqueue(self, conversation: str, preview: str) -> int:
        if conversation in self._claims:
            return 0
        if conversation not in self._waiting:
            self._waiting[conversation] = QueueEntry(conversation, _now_ms(), preview)
        return await self.position(conversation) or 0

    async def position(self, conversation: str) -> int | None:
        for n, waiting in enumerate(self._waiting, 1):
            if waiting == conversation:
                return n
        return None

    async def waiting(self) -> list[QueueEntry]:
        return list(self._waiting.values())

    async def claim(self, conversation: str, agent: str) -> bool:
        if self._waiting.pop(conversation, None) is None:
            return False
        self._claims[conversation] = agent
        return True

    async def agent_of(self, conversation: str) -> str | None:
        return self._claims.get(conversation)

    async def active(self, agent: str) -> list[str]:
        return [c for c, a in self._claims.items() if a == agent]

    async def finish(self, conversation: str, agent: str) -> bool:
        if self._claims.get(conversation) != agent:
            return False
        del self._claims[conversation]
        return True


# KEYS: queue, preview, claims. ARGV: conversation, now_ms, preview.
_ENQUEUE = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
return redis.call('ZRANK', KEYS[1], ARGV[1]) + 1
"""
# KEYS: queue, preview, claims, agent set. ARGV: conversation, agent.
_CLAIM = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""
# KEYS: claims, agent set. ARGV: conversation, agent.
_FINISH = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""


class RedisHandoffQueue(HandoffQueue):
    """The queue shared by every process using the same Redis and key prefix."""

    backend = "redis"

    def __init__(
        self, *, url: str = "redis://127.0.0.1:6379/0", prefix: str = "chatbot", client: aioredis.Redis | None = None
    ) -> None:
        # A client given in (the application's one client) is closed by whoever made it. Replies
        # are bytes (the shared client does not decode): what is read is decoded here.
        self._own_client = client is None
        self._client: aioredis.Redis = client if client is not None else redis_client(url)
        base = f"{prefix}:handoff"
        self._queue, self._preview, self._claims = f"{base}:queue", f"{base}:preview", f"{base}:claims"
        self._agent_prefix = f"{base}:agent:"
        self._enqueue = self._client.register_script(_ENQUEUE)
        self._claim = self._client.register_script(_CLAIM)
        self._finish = self._client.register_script(_FINISH)

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def enqueue(self, conversation: str, preview: str) -> int:
        keys = [self._queue, self._preview, self._claims]
        return int(await self._enqueue(keys=keys, args=[conversation, _now_ms(), preview]))

    async def position(self, conversation: str) -> int | None:
        rank: Any = await self._client.zrank(self._queue, conversation)
        return None if rank is None else int(rank) + 1

    async def waiting(self) -> list[QueueEntry]:
        pairs: list[Any] = await self._client.zrange(self._queue, 0, -1, withscores=True)
        if not pairs:
            return []
        previews: list[Any] = await self._client.hmget(self._preview, [c for c, _ in pairs])
        return [
            QueueEntry(_text(c), int(score), _text(p or b"")) for (c, score), p in zip(pairs, previews, strict=True)
        ]

    async def claim(self, conversation: str, agent: str) -> bool:
        keys = [self._queue, self._preview, self._claims, self._agent_prefix + agent]
        return bool(await self._claim(keys=keys, args=[conversation, agent]))

    async def agent_of(self, conversation: str) -> str | None:
        agent = await self._client.hget(self._claims, conversation)
        return None if agent is None else _text(agent)

    async def active(self, agent: str) -> list[str]:
        members: set[Any] = await self._client.smembers(self._agent_prefix + agent)
        return sorted(_text(m) for m in members)

    async def finish(self, conversation: str, agent: str) -> bool:
        keys = [self._claims, self._agent_prefix + agent]
        return bool(await self._finish(keys=keys, args=[conversation, agent]))
