"""The in-memory channel layer: one process, no dependencies; the embedded default."""

from __future__ import annotations

import time

from .base import ChannelLayer, Message, process_of, validate_channel_name, validate_group_name, validate_message


class MemoryChannelLayer(ChannelLayer):
    """Channels and groups held in this process's memory."""

    backend = "memory"

    def __init__(self, *, capacity: int = 100, expiry: float = 60, group_expiry: float = 86400) -> None:
        super().__init__(capacity=capacity, expiry=expiry, group_expiry=group_expiry)
        self._groups: dict[str, dict[str, float]] = {}

    async def send(self, channel: str, message: Message) -> None:
        validate_channel_name(channel)
        validate_message(message)
        self.stats.sent += 1
        self.local.deliver(channel, message, strict=True)

    async def receive(self, channel: str) -> Message:
        validate_channel_name(channel)
        return await self.local.get(channel)

    async def group_add(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.monotonic()

    async def group_discard(self, group: str, channel: str) -> None:
        validate_group_name(group)
        validate_channel_name(channel)
        members = self._groups.get(group)
        if members is None:
            return
        members.pop(channel, None)
        if not members:
            del self._groups[group]

    async def group_send(self, group: str, message: Message) -> None:
        validate_group_name(group)
        validate_message(message)
        self.stats.group_sent += 1
        members = self._groups.get(group)
        if not members:
            return
        oldest = time.monotonic() - self.group_expiry
        known = self.local.contains
        # Expired memberships, and process channels whose socket released them without leaving.
        stale = [
            channel
            for channel, joined in members.items()
            if joined < oldest or (not known(channel) and process_of(channel) is not None)
        ]
        for channel in stale:
            del members[channel]
        self.local.deliver_many(members, message)

    def group_members(self, group: str) -> list[str]:
        """The current members of a group (for tests and diagnostics)."""
        return list(self._groups.get(group, ()))

    async def flush(self) -> None:
        self._groups.clear()
        self.local.clear()

    async def close(self) -> None:
        await self.flush()
