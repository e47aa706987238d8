"""The customer directory in Redis, shared by every process (store/customers.py says what it keeps).

`<prefix>:customer:{<sha256 of the customer id>}` names the customer's conversation: the host's
customer ids stay out of key names (and out of what `KEYS`/`SCAN` show to an operator).
`<prefix>:conv:{<id>}:customer` holds the customer of a conversation, in the conversation's slot.
Each key is written on its own (one slot each on a Redis Cluster); a bind writes the
conversation's side first, so a half-done bind never hands a conversation to a customer it is
not marked for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from typing import Any

import orjson
from redis.exceptions import RedisError

from ..errors import StoreUnavailableError
from ..identity import Customer
from ..ops.redis import RedisClient
from .customers import CustomerDirectory

#: Seconds a directory call may take on a user-facing path (the store's own deadline).
CALL_TIMEOUT = 2.0


class RedisCustomerDirectory(CustomerDirectory):
    """Verified customers in Redis; the client is the application's (closed by whoever made it)."""

    backend = "redis"

    def __init__(self, client: RedisClient, *, prefix: str = "chatbot", ttl: float = 86400.0) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)

    def _customer_key(self, customer_id: str) -> str:
        digest = hashlib.sha256(customer_id.encode()).hexdigest()[:32]
        return f"{self.prefix}:customer:{{{digest}}}"

    def _conversation_key(self, conversation: str) -> str:
        return f"{self.prefix}:conv:{{{conversation}}}:customer"

    async def conversation_of(self, customer_id: str) -> str | None:
        raw = await self._call(self._client.get(self._customer_key(customer_id)))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def customer_of(self, conversation: str) -> Customer | None:
        raw = await self._call(self._client.get(self._conversation_key(conversation)))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Customer(str(data.get("id", "")), str(data.get("name", "")))

    async def bind(self, customer: Customer, conversation: str) -> None:
        record = orjson.dumps({"id": customer.id, "name": customer.name})
        await self._call(self._client.set(self._conversation_key(conversation), record, px=self.ttl_ms))
        await self._call(self._client.set(self._customer_key(customer.id), conversation, px=self.ttl_ms))

    async def _call(self, command: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await command
        except (RedisError, OSError, TimeoutError) as exc:
            detail = f"no answer from Redis within {CALL_TIMEOUT:g} s" if type(exc) is TimeoutError else str(exc)
            raise StoreUnavailableError(f"customer directory unreachable: {detail}") from exc
