"""The Redis layer's group fan-out: one inbox entry per target process, on the node that holds it.

On Redis Cluster a Lua script may touch keys of one hash slot only, so a group send cannot write
other processes' inboxes from the group's slot. It takes up to three steps there:

1. TARGETS on the group's slot: the group's targets index, `targets:{<group>}` (`p:<process>`
   per process with members, `c:<channel>` per shared channel), expired entries pruned;
2. one SEND per target process (its inbox and heartbeat share the tag `{<process>}`) and per
   shared channel, pipelined: redis-py's ClusterPipeline groups the commands by node and sends to
   those nodes concurrently, so a message reaches only the nodes holding a target inbox, never
   every node (with one target it is a plain command: cheaper than a pipeline);
3. only when a SEND found a target's heartbeat gone (it returns 0): SWEEP on the group's slot
   removes that process from the targets and its channels from the group.

On a standalone Redis (or a Sentinel-managed primary) the same work is one script, GROUP_SEND,
which builds the other processes' key names in Lua: one round trip instead of two (measured:
0.24 ms against 0.35 ms median for bench/bench_group_send.py on loopback, where a round trip is
cheapest) and an atomic sweep. Either way Redis work is O(processes), independent of the member
count; each receiving process delivers to its own members from memory.

MOVED/ASK/TRYAGAIN during a resharding are followed by redis-py (a pipeline resends each
redirected command on its own); a command that still fails is raised, and the layer counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from ..ops.redis import RedisClient
from . import redis_scripts as scripts


@dataclass
class FanOut:
    """What one group send did in Redis."""

    written: int = 0  # inbox entries written (other processes reached)
    queued: int = 0  # shared-channel entries written
    full: int = 0  # targets skipped because their inbox or channel was full (counted on cluster only)
    swept: int = 0  # dead processes removed from the group


class GroupFanOut:
    """Writes a group message to every other target process's inbox (see the module docstring)."""

    def __init__(self, client: RedisClient, key: Callable[[str, str], str], prefix: str) -> None:
        self._client = client
        self._key = key
        self._prefix = prefix
        self.cluster = isinstance(client, RedisCluster)
        self._send = client.register_script(scripts.SEND)
        self._targets = client.register_script(scripts.TARGETS)
        self._sweep = client.register_script(scripts.SWEEP)
        self._group_send = client.register_script(scripts.GROUP_SEND)

    async def send(
        self,
        group: str,
        *,
        own: str,
        oldest: float,
        header: bytes,
        payload: bytes,
        inbox_cap: int,
        capacity: int,
        expiry_ms: int,
        now_ms: int,
    ) -> FanOut:
        """Send `payload` to every target of `group` except process `own` (its members were
        served locally). Raises what Redis raised for any target (after sweeping the dead)."""
        keys = [self._key("group", group), self._key("targets", group)]
        if not self.cluster:
            args: list[Any] = [
                self._prefix,
                own,
                oldest,
                header,
                payload,
                group,
                inbox_cap,
                expiry_ms,
                capacity,
                expiry_ms,
            ]
            written, swept, queued = await self._group_send(keys=keys, args=args)
            return FanOut(written=written, queued=queued, swept=swept)
        entry = header + b'{"g":"' + group.encode() + b'","m":' + payload + b"}"
        calls: list[tuple[list[str], list[Any]]] = []
        processes: list[str | None] = []  # the process of each call (None: a shared channel)
        for target in await self.targets(group, oldest):
            kind, name = target[:2], target[2:]
            if kind == "p:" and name != own:
                calls.append(
                    ([self._key("inbox", name), self._key("process", name)], [entry, inbox_cap, expiry_ms, now_ms])
                )
                processes.append(name)
            elif kind == "c:":
                calls.append(([self._key("channel", name)], [header + payload, capacity, expiry_ms, now_ms]))
                processes.append(None)
        outcome = FanOut()
        if not calls:
            return outcome
        results = await self.run_sends(calls)
        dead: list[str] = []
        error: BaseException | None = None
        for process, result in zip(processes, results, strict=True):
            if isinstance(result, BaseException):
                error = error or result
            elif result == 1:
                if process is None:
                    outcome.queued += 1
                else:
                    outcome.written += 1
            elif result == -1:
                outcome.full += 1  # a full member of a group send misses it, as locally
            elif process is not None:  # 0: its heartbeat is gone, its members never read again
                dead.append(process)
        if dead:
            await self._sweep(keys=keys, args=dead)
            outcome.swept = len(dead)
        if error is not None:
            raise error
        return outcome

    async def targets(self, group: str, oldest: float) -> list[str]:
        """The group's live targets (`p:<process>`, `c:<channel>`), expired ones pruned."""
        replies: Any = await self._targets(keys=[self._key("targets", group)], args=[oldest])
        return [target.decode() for target in replies]

    async def run_sends(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run SEND once per (keys, args); each reply, or the error it met.

        Several go in one pipeline, EVALSHA as a raw command: redis-py blocks its `evalsha`
        method on cluster pipelines, since the script may be missing on a node. A NoScriptError
        (a node restarted or joined) loads the script (a cluster loads it on every primary) and
        runs those calls again: a NoScriptError means the call did not run."""
        if len(calls) == 1:
            keys, args = calls[0]
            try:
                return [await self._send(keys=keys, args=args)]  # AsyncScript loads a missing script
            except RedisError as error:
                return [error]
        results = await self._pipelined(calls)
        missing = [n for n, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self._client.script_load(scripts.SEND)
            for n, result in zip(missing, await self._pipelined([calls[n] for n in missing]), strict=True):
                results[n] = result
        return results

    async def _pipelined(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", self._send.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
