"""The Redis channel layer on a 3-primary Redis Cluster: hash slots, fan-out per node, resharding.

The layer contract suite and tests/test_redis_layer.py run on the cluster too; these are the
cluster's own questions: does every script stay in one slot, does a group send reach only the
nodes holding a target inbox, does a resharding under load lose anything silently, is a
SIGKILLed peer swept, and do the processes' inboxes spread evenly over the primaries.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from chatbot_server import setup
from chatbot_server.errors import LayerUnavailableError
from chatbot_server.keys import LAYER_KEY, STORE_KEY
from chatbot_server.layers.base import LayerStats, Message
from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.store.redis import conversation_keys

from .helpers import MakeLayer, make_settings, receive_json, started_layers
from .redis_cluster import RedisClusterProcs
from .redis_server import free_port, unique_prefix

pytestmark = pytest.mark.timeout(60)

# No background commands while counting.
QUIET: dict[str, Any] = {"heartbeat_interval": 3600.0, "probe_interval": 3600.0}


async def recv(layer: RedisChannelLayer, channel: str) -> Message:
    async with asyncio.timeout(5):
        return await layer.receive(channel)


def ports_of(url: str) -> list[int]:
    """The ports a `redis+cluster://` URL names."""
    return [int(node.rsplit(":", 1)[1]) for node in url.removeprefix("redis+cluster://").split(",")]


@pytest.fixture
async def inspect(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A plain cluster client, to ask which node serves a key and to look at keys."""
    client = RedisCluster(host="127.0.0.1", port=ports_of(redis_cluster_url)[0])
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def nodes(redis_cluster_url: str) -> AsyncIterator[dict[int, aioredis.Redis]]:
    """A standalone client per primary, by port: its own commandstats, MONITOR, CONFIG."""
    clients = {port: aioredis.Redis(host="127.0.0.1", port=port) for port in ports_of(redis_cluster_url)}
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest.fixture
async def make_layer(redis_cluster_url: str) -> AsyncIterator[MakeLayer]:
    """Start layers ("processes") sharing one prefix on the session's cluster."""
    async with started_layers(redis_cluster_url) as make:
        yield make


def port_of(inspect: RedisCluster, key: str) -> int:
    node = inspect.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def calls(nodes: dict[int, aioredis.Redis], command: str) -> dict[int, int]:
    """How often each primary has run `command` (INFO commandstats; scripts' own commands count)."""
    counts = {}
    for port, client in nodes.items():
        stats = await client.info("commandstats")
        counts[port] = int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return counts


def delta(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {port: after[port] - before[port] for port in after}


def problems(stats: LayerStats) -> int:
    """Remote work the layer could not do (counted, never silent)."""
    return stats.write_failures + stats.late_writes + stats.failures


async def test_every_script_touches_one_slot(
    make_layer: MakeLayer, inspect: RedisCluster, nodes: dict[int, aioredis.Redis]
) -> None:
    """MONITOR every primary while the layer does all it does, then check each EVALSHA's keys."""
    seen: list[str] = []
    markers = {port: asyncio.Event() for port in nodes}

    async def watch(port: int, started: asyncio.Event) -> None:
        async with nodes[port].monitor() as monitor:
            started.set()
            async for command in monitor.listen():
                text = command["command"]
                if text == "ECHO end-of-test":
                    markers[port].set()
                elif text.upper().startswith("EVALSHA "):
                    seen.append(text)

    watchers = []
    for port in nodes:
        started = asyncio.Event()
        watchers.append(asyncio.create_task(watch(port, started)))
        await started.wait()
    try:
        one, two, doomed = await make_layer(), await make_layer(), await make_layer(**QUIET)
        mine, theirs, gone = await one.new_channel(), await two.new_channel(), await doomed.new_channel()
        for member in (mine, theirs, gone, "worker.jobs"):  # own, another process's, a shared channel
            await one.group_add("room", member)
        await one.send(theirs, {"type": "direct"})
        assert (await recv(two, theirs))["type"] == "direct"
        await one.send("worker.jobs", {"type": "job"})
        assert (await recv(two, "worker.jobs"))["type"] == "job"
        await inspect.delete(doomed._process_key)  # its heartbeat lapsed: the group send sweeps it
        await two.group_send("room", {"type": "broadcast"})  # three targets: a pipeline over nodes
        assert (await recv(one, mine))["type"] == "broadcast"
        assert (await recv(two, theirs))["type"] == "broadcast"
        assert (await recv(one, "worker.jobs"))["type"] == "broadcast"
        assert sorted(await one.group_members("room")) == sorted([mine, theirs, "worker.jobs"])
        await one.group_discard("room", theirs)
        await one.release_channel(mine)
        await one.group_send("room", {"type": "one target"})
        assert (await recv(two, "worker.jobs"))["type"] == "one target"
        for layer in (one, two):
            assert problems(layer.stats) == 0
        for client in nodes.values():
            await client.echo("end-of-test")
        async with asyncio.timeout(5):
            for event in markers.values():
                await event.wait()
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    layout = re.compile(rf"^{re.escape(one.prefix)}:(inbox|process|group|targets|channel):\{{[^{{}}]+\}}$")
    scripts = {text.split(" ")[1] for text in seen}
    assert len(scripts) == 3  # SEND (sends, probes), TARGETS and SWEEP; GROUP_SEND is standalone's
    for text in seen:
        _, _, numkeys, *rest = text.split(" ")
        keys = rest[: int(numkeys)]
        assert keys, text
        assert all(layout.match(key) for key in keys), text
        assert len({key_slot(key.encode()) for key in keys}) == 1, text


async def test_group_send_goes_only_to_nodes_holding_target_inboxes(
    make_layer: MakeLayer, inspect: RedisCluster, nodes: dict[int, aioredis.Redis]
) -> None:
    sender = await make_layer(**QUIET)
    target = await make_layer(**QUIET)
    inbox_node = port_of(inspect, target._inbox_key)
    # A group whose keys live on another node, so that the third node serves neither.
    group = next(
        f"room-{n}" for n in range(1000) if port_of(inspect, f"{sender.prefix}:group:{{room-{n}}}") != inbox_node
    )
    group_node = port_of(inspect, f"{sender.prefix}:group:{{{group}}}")
    (idle_node,) = set(nodes) - {inbox_node, group_node}
    for layer in (sender, target):
        for _ in range(50):
            await layer.group_add(group, await layer.new_channel())
    theirs = await target.new_channel()
    await target.group_add(group, theirs)

    evalsha, rpush = await calls(nodes, "evalsha"), await calls(nodes, "rpush")
    await sender.group_send(group, {"type": "broadcast"})
    assert (await recv(target, theirs))["type"] == "broadcast"
    assert delta(await calls(nodes, "evalsha"), evalsha) == {group_node: 1, inbox_node: 1, idle_node: 0}
    assert delta(await calls(nodes, "rpush"), rpush) == {group_node: 0, inbox_node: 1, idle_node: 0}


async def test_inbox_reads_ask_no_node_for_keys(make_layer: MakeLayer, nodes: dict[int, aioredis.Redis]) -> None:
    one, two = await make_layer(**QUIET), await make_layer(**QUIET)
    theirs = await two.new_channel()
    before = await calls(nodes, "command|getkeys")
    for n in range(20):
        await one.send(theirs, {"type": "seq", "n": n})
        assert (await recv(two, theirs))["n"] == n  # one BLMPOP each, at least
    # BLMPOP's key position moves (numkeys): redis-py would ask a node with COMMAND GETKEYS each time.
    assert delta(await calls(nodes, "command|getkeys"), before) == dict.fromkeys(nodes, 0)


async def test_resharding_under_load_loses_nothing_silently(redis_cluster: RedisClusterProcs) -> None:
    prefix = unique_prefix()
    sender = RedisChannelLayer(url=redis_cluster.url, prefix=prefix)
    receiver = RedisChannelLayer(url=redis_cluster.url, prefix=prefix)
    inspect = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    try:
        await sender.start()
        await receiver.start()
        await inspect.initialize()
        source = port_of(inspect, receiver._inbox_key)
        destination = next(port for port in redis_cluster.primaries() if port != source)
        # The group's keys on the same node: its whole slot range moves, inbox, heartbeat and group alike.
        group = next(f"room-{n}" for n in range(1000) if port_of(inspect, f"{prefix}:group:{{room-{n}}}") == source)
        slots = sum(end - start + 1 for start, end, *_ in await _slots_of(source))

        direct: list[int] = []
        ended = asyncio.Event()

        def on_direct(message: Message) -> bool:
            if message["type"] == "end":
                ended.set()
            else:
                direct.append(message["n"])
            return True

        channel = await receiver.new_channel()
        receiver.subscribe(channel, on_direct)
        got: list[list[int]] = []
        for _ in range(5):
            member = await receiver.new_channel()
            got.append(heard := [])
            receiver.subscribe(member, _collect(heard))
            await receiver.group_add(group, member)

        sent: list[int] = []
        failed: list[int] = []  # sends that raised
        reported: set[int] = set()  # group sends the sender counted as not done in Redis
        moving = asyncio.ensure_future(asyncio.to_thread(redis_cluster.reshard, source, destination, slots))
        n = 0
        while not moving.done():
            try:
                await sender.send(channel, {"type": "d", "n": n})
                sent.append(n)
            except LayerUnavailableError:
                failed.append(n)
            before = problems(sender.stats)
            await sender.group_send(group, {"type": "g", "n": n})
            if problems(sender.stats) != before:
                reported.add(n)
            n += 1
        await moving
        await sender.send(channel, {"type": "end"})  # same inbox: everything before it was read
        async with asyncio.timeout(10):
            await ended.wait()

        fresh = RedisCluster(host="127.0.0.1", port=destination)
        await fresh.initialize()
        assert port_of(fresh, receiver._inbox_key) == destination  # it did move under the load
        await fresh.aclose()
        assert n > 100
        # The layer's clients knew the old owner: they learned the new one from MOVED replies.
        for client in (sender._client, receiver._blocking):
            assert isinstance(client, RedisCluster)
            assert port_of(client, receiver._inbox_key) == destination
        assert direct == sent  # in order, none lost, none twice; a send that failed raised
        for heard in got:
            assert len(heard) == len(set(heard)) and heard == sorted(heard)
            assert set(range(n)) - set(heard) <= reported
        print(
            f"resharded {slots} slots under {n} sends and group sends: {len(failed)} sends raised, "
            f"{len(reported)} group sends counted as failed"
        )
    finally:
        await sender.close()
        await receiver.close()
        await inspect.aclose()


def _collect(into: list[int]) -> Callable[[Message], bool]:
    def deliver(message: Message) -> bool:
        into.append(message["n"])
        return True

    return deliver


async def _slots_of(port: int) -> list[list[Any]]:
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        ranges: Any = await client.execute_command("CLUSTER", "SLOTS")
    finally:
        await client.aclose()
    return [entry for entry in ranges if int(entry[2][1]) == port]


PEER = """
import asyncio, sys
from chatbot_server.layers.redis import RedisChannelLayer

async def main():
    layer = RedisChannelLayer(url=sys.argv[1], prefix=sys.argv[2], heartbeat_interval=0.3)
    await layer.start()
    for _ in range(3):
        await layer.group_add("users", await layer.new_channel())
    print(layer.process_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_sigkilled_peer_is_swept(
    make_layer: MakeLayer, inspect: RedisCluster, nodes: dict[int, aioredis.Redis], redis_cluster_url: str
) -> None:
    alive = await make_layer()
    mine = await alive.new_channel()
    await alive.group_add("users", mine)
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PEER, redis_cluster_url, alive.prefix, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert peer.stdout is not None
        async with asyncio.timeout(20):
            dead = (await peer.stdout.readline()).decode().strip()
        assert dead and len(await alive.group_members("users")) == 4
        heartbeat = f"{alive.prefix}:process:{{{dead}}}"
        node = nodes[port_of(inspect, heartbeat)]
        expired = node.pubsub()
        # Await the heartbeat key's expiry as an event (keyspace notification), not by polling.
        await node.config_set("notify-keyspace-events", "Ex")
        await expired.subscribe("__keyevent@0__:expired")
        peer.send_signal(signal.SIGKILL)
        await peer.wait()
        async with asyncio.timeout(10):
            async for event in expired.listen():
                if event["type"] == "message" and event["data"] == heartbeat.encode():
                    break
        await expired.aclose()
    finally:
        if peer.returncode is None:
            peer.kill()
            await peer.wait()
    await alive.group_send("users", {"type": "after the crash"})
    assert (await recv(alive, mine))["type"] == "after the crash"
    assert await alive.group_members("users") == [mine]
    targets = await inspect.zrange(f"{alive.prefix}:targets:{{users}}", 0, -1)
    assert f"p:{dead}".encode() not in targets
    assert await inspect.exists(f"{alive.prefix}:inbox:{{{dead}}}") == 0


async def test_comeback_registers_again_one_heartbeat_later(
    make_layer: MakeLayer, inspect: RedisCluster, nodes: dict[int, aioredis.Redis]
) -> None:
    """A sweep that found the process dead may land after its comeback registered (two steps on a
    cluster): the process registers once more a heartbeat later, when no such sweep is in flight."""
    layer = await make_layer(heartbeat_interval=0.2, probe_interval=3600)
    channel = await layer.new_channel()
    await layer.group_add("users", channel)
    keys = [f"{layer.prefix}:group:{{users}}", f"{layer.prefix}:targets:{{users}}"]  # one slot
    node = nodes[port_of(inspect, keys[0])]
    events = node.pubsub()
    # Await the registrations as events (keyspace notifications of both keys), not by polling.
    await node.config_set("notify-keyspace-events", "Kz")
    await events.subscribe(*(f"__keyspace@0__:{key}" for key in keys))

    async def registered() -> None:
        written: set[bytes] = set()
        async for event in events.listen():
            if event["type"] == "message" and event["data"] == b"zadd":
                written.add(event["channel"])
                if len(written) == len(keys):
                    return

    try:
        async with asyncio.timeout(5):
            await inspect.delete(*keys)  # swept, then (so no heartbeat between re-adds them) lapsed
            await inspect.delete(layer._process_key)
            await registered()
            await inspect.delete(*keys)  # the late sweep
            await registered()
    finally:
        await events.aclose()
    assert await layer.group_members("users") == [channel]
    assert await inspect.zrange(keys[1], 0, -1) == [f"p:{layer.process_id}".encode()]


async def test_required_and_no_node_reachable_raises() -> None:
    # redis-py reports an unreachable cluster as RedisClusterException, not a ConnectionError.
    layer = RedisChannelLayer(url=f"redis+cluster://127.0.0.1:{free_port()}", required=True, connect_timeout=1)
    with pytest.raises(LayerUnavailableError, match="unreachable"):
        await layer.start()


async def test_inboxes_spread_evenly_over_primaries(
    make_layer: MakeLayer, inspect: RedisCluster, nodes: dict[int, aioredis.Redis]
) -> None:
    """Started one after another, each process puts its inbox on a primary with the fewest (with
    random ids, 6 processes would land 2 / 2 / 2 one time in eight)."""
    layers = [await make_layer(**QUIET) for _ in range(6)]
    assert Counter(port_of(inspect, layer._inbox_key) for layer in layers) == dict.fromkeys(nodes, 2)
    for layer in layers:
        assert layer._inbox_key == f"{layer.prefix}:inbox:{{{layer.process_id}}}"
        assert layer._process_key == f"{layer.prefix}:process:{{{layer.process_id}}}"
        assert await inspect.exists(layer._process_key) == 1  # the heartbeat under the chosen id
    # A process that leaves frees its place: the next one to start takes it.
    freed = port_of(inspect, layers[4]._inbox_key)
    await layers[4].close()
    newcomer = await make_layer(**QUIET)
    assert port_of(inspect, newcomer._inbox_key) == freed
    channel = await newcomer.new_channel()  # named after the chosen id, read from the chosen inbox
    await layers[0].send(channel, {"type": "placed"})
    assert (await recv(newcomer, channel))["type"] == "placed"
    assert all(problems(layer.stats) == 0 for layer in (*layers, newcomer))


async def test_the_id_is_kept_once_a_channel_is_named_and_on_one_server(
    redis_cluster_url: str, redis_server: str
) -> None:
    early = RedisChannelLayer(url=redis_cluster_url, prefix=unique_prefix(), **QUIET)
    single = RedisChannelLayer(url=redis_server, prefix=unique_prefix(), **QUIET)
    channel, built = await early.new_channel(), single.process_id
    try:
        await early.start()
        await single.start()
        assert early.process_id in channel  # a channel made before start() keeps its id
        assert single.process_id == built  # one server: any id will do, it is not redrawn
    finally:
        await early.close()
        await single.close()


async def test_an_apps_store_gets_the_layers_final_id(
    aiohttp_client: Any, redis_cluster_url: str, inspect: RedisCluster
) -> None:
    prefix = unique_prefix()
    app = web.Application()
    setup(
        app, make_settings(layer={"backend": "redis", "redis": {"url": redis_cluster_url, "prefix": prefix, **QUIET}})
    )
    layer, store = app[LAYER_KEY], app[STORE_KEY]
    assert isinstance(layer, RedisChannelLayer)
    built = port_of(inspect, layer._inbox_key)
    # A live inbox on every primary but one that is not the built id's: the layer must move there.
    ports = {int(node.port) for node in inspect.get_primaries()}
    free = min(ports - {built})
    for port in ports - {free}:
        name = next(
            f"other-{n}" for n in itertools.count() if port_of(inspect, f"{prefix}:process:{{other-{n}}}") == port
        )
        await inspect.set(f"{prefix}:process:{{{name}}}", b"1", px=60_000)
    client = await aiohttp_client(app)
    assert port_of(inspect, layer._inbox_key) == free
    assert store.process_id == layer.process_id
    async with client.ws_connect("/ws") as ws:
        conversation = (await receive_json(ws))["conversation"]
        await store.flush()
        assert await inspect.get(conversation_keys(prefix, conversation)[1]) == layer.process_id.encode()
