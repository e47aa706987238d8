"""The group memberships of this process's own channels, kept in memory by the Redis layer."""

from __future__ import annotations


class LocalGroups:
    """Which groups each local channel belongs to, with its join time (Unix seconds).

    The process delivers group messages to its own channels from this map (no Redis round trip,
    and it keeps working while Redis is away), and re-registers it in Redis after an outage.
    """

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, float]] = {}
        self._of_channel: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(members) for members in self._groups.values())

    def has(self, group: str) -> bool:
        """Whether any local channel belongs to `group`."""
        return group in self._groups

    def joined(self, group: str, channel: str) -> float | None:
        """When `channel` joined `group`, or None if it is not a member."""
        members = self._groups.get(group)
        return None if members is None else members.get(channel)

    def add(self, group: str, channel: str, joined: float) -> None:
        """Record (or renew) a membership."""
        self._groups.setdefault(group, {})[channel] = joined
        self._of_channel.setdefault(channel, set()).add(group)

    def discard(self, group: str, channel: str) -> None:
        """Forget one membership; a no-op if it is unknown."""
        members = self._groups.get(group)
        if members is None or members.pop(channel, None) is None:
            return
        if not members:
            del self._groups[group]
        groups = self._of_channel.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._of_channel[channel]

    def forget(self, channel: str) -> list[str]:
        """Forget every membership of a channel; return the groups it was in."""
        groups = self._of_channel.pop(channel, set())
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]
        return sorted(groups)

    def members(self, group: str, oldest: float) -> list[str]:
        """The members of a group that joined at or after `oldest`; older ones are forgotten."""
        members = self._groups.get(group)
        if not members:
            return []
        stale = [channel for channel, joined in members.items() if joined < oldest]
        for channel in stale:
            self.discard(group, channel)
        return list(members)

    def entries(self) -> list[tuple[str, str, float]]:
        """Every (group, channel, joined) held."""
        return [
            (group, channel, joined) for group, members in self._groups.items() for channel, joined in members.items()
        ]

    def clear(self) -> None:
        """Forget everything."""
        self._groups.clear()
        self._of_channel.clear()
