"""A throwaway Redis Cluster for tests: three primaries (optionally one replica each) on loopback.

Built from plain redis-server processes (`--cluster-enabled yes`) and `redis-cli --cluster create`,
as an operator would; tests may reshard it (`redis-cli --cluster reshard`), kill a node, and read
per-node command counts (INFO commandstats) to see how load spreads.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from .redis_server import INSTALL_HINT, READY_DEADLINE, RedisProcess

CLUSTER_DEADLINE = 20.0


def _command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command to 127.0.0.1:`port` through redis-cli (its reply as text)."""
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout


def _free_ports(count: int) -> list[int]:
    # A cluster node also listens on port + 10000 (the cluster bus): both must be free.
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class RedisClusterProcs:
    """`primaries` cluster primaries (and `replicas` replicas per primary) on free loopback ports."""

    def __init__(self, primaries: int = 3, replicas: int = 0) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.replicas = replicas
        ports = _free_ports(primaries * (1 + replicas))
        self.nodes = [
            RedisProcess(
                port,
                extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            )
            for port in ports
        ]

    @property
    def ports(self) -> list[int]:
        """Every node's port (primaries first, as created)."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL naming every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        """Start every node, create the cluster and wait until every node reports it ok."""
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=READY_DEADLINE,
            check=True,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Wait until every running node says cluster_state:ok and agrees on all slots."""
        deadline = time.monotonic() + CLUSTER_DEADLINE
        while True:
            states = [_command(node.port, "cluster", "info") for node in self.nodes if node.running]
            if all("cluster_state:ok" in state and "cluster_slots_ok:16384" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster on {self.ports} is not ok after {CLUSTER_DEADLINE}s")
            time.sleep(0.05)  # polling a cluster state that has no readiness event

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now."""
        return [
            node.port
            for node in self.nodes
            if node.running and "role:master" in _command(node.port, "info", "replication")
        ]

    def node_id(self, port: int) -> str:
        """The cluster node id of the node on `port`."""
        return _command(port, "cluster", "myid").strip()

    def reshard(self, source: int, target: int, slots: int) -> None:
        """Move `slots` slots from the primary on `source` to the one on `target` (redis-cli
        migrates their keys with MIGRATE, so clients meet ASK and then MOVED meanwhile)."""
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{source}",
                "--cluster-from",
                self.node_id(source),
                "--cluster-to",
                self.node_id(target),
                "--cluster-slots",
                str(slots),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.wait_ok()

    def command_counts(self) -> dict[int, int]:
        """Commands each primary has run (INFO commandstats, summed over commands)."""
        counts = {}
        for port in self.primaries():
            total = 0
            for line in _command(port, "info", "commandstats").splitlines():
                if line.startswith("cmdstat_") and "calls=" in line:
                    total += int(line.split("calls=", 1)[1].split(",", 1)[0])
            counts[port] = total
        return counts

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT on every primary (before measuring a spread)."""
        for port in self.primaries():
            _command(port, "config", "resetstat")

    def cleanup(self) -> None:
        """Kill every node and remove their directories."""
        for node in self.nodes:
            node.cleanup()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of a private 3-primary Redis Cluster shared by the session (keys: use unique prefixes)."""
    cluster = RedisClusterProcs()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterProcs]:
    """A private 3-primary Redis Cluster for one test, which it may reshard or break."""
    cluster = RedisClusterProcs()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()
