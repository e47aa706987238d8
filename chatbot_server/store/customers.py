"""Which conversation belongs to which verified customer, both ways (identity.py, docs/widget.md).

A verified customer has one current conversation: whichever device or browser they sign in on
resumes it. A conversation bound to a customer is theirs alone: resuming it by its id needs
their token. Kept as long as conversations are (`history.ttl`), renewed at each bind.
"""

from __future__ import annotations

import abc
import time

from ..identity import Customer


class CustomerDirectory(abc.ABC):
    """Verified customers and their conversations."""

    backend: str = "abstract"

    @abc.abstractmethod
    async def conversation_of(self, customer_id: str) -> str | None:
        """The customer's current conversation, or None."""

    @abc.abstractmethod
    async def customer_of(self, conversation: str) -> Customer | None:
        """The verified customer a conversation belongs to, or None (anonymous)."""

    @abc.abstractmethod
    async def bind(self, customer: Customer, conversation: str) -> None:
        """Make `conversation` the customer's current one (and renew both entries' lifetime)."""


class MemoryCustomerDirectory(CustomerDirectory):
    """One process's directory (the memory store's companion)."""

    backend = "memory"

    def __init__(self, *, ttl: float = 86400.0) -> None:
        self.ttl = ttl
        self._conversation: dict[str, tuple[str, float]] = {}  # customer id -> (conversation, expires)
        self._customer: dict[str, tuple[Customer, float]] = {}  # conversation -> (customer, expires)

    async def conversation_of(self, customer_id: str) -> str | None:
        found = self._conversation.get(customer_id)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def customer_of(self, conversation: str) -> Customer | None:
        found = self._customer.get(conversation)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def bind(self, customer: Customer, conversation: str) -> None:
        expires = time.monotonic() + self.ttl
        self._sweep()
        self._conversation[customer.id] = (conversation, expires)
        self._customer[conversation] = (customer, expires)

    def _sweep(self) -> None:
        now = time.monotonic()
        for table in (self._conversation, self._customer):
            for key in [k for k, (_, expires) in table.items() if expires < now][:100]:
                del table[key]
