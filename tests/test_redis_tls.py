"""TLS to Redis (issue #15): `rediss+sentinel://` and `rediss+cluster://` on real TLS-only servers.

A throwaway CA (the openssl CLI, into a temporary directory) signs one certificate for 127.0.0.1.
A primary, a replica and three sentinels listen on TLS ports only (`port 0`), replicate and
monitor over TLS (`tls-replication yes`); the three primaries of a cluster too, cluster bus
included (`tls-cluster yes`), and they also want a client certificate (`tls-auth-clients yes`, so
`ssl_certfile`/`ssl_keyfile` must reach every connection). Every data node wants a password. On
each: two channel layers start, a group_send reaches a member on the other one (its inbox reader
pops on the blocking client that ops/redis.py derives from the shared one), and a frame written by
one conversation store is read back by another. A wrong CA is refused at start with a clear error
that does not show the password.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from chatbot_server.errors import LayerUnavailableError
from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.store.redis import RedisConversationStore

from .redis_cluster import _free_ports
from .redis_sentinel import SERVICE
from .redis_server import INSTALL_HINT, READY_DEADLINE, free_port, unique_prefix, wait_answering

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.timeout(60)]

PASSWORD = "tls-pw-5e1f0c"  # the data nodes' password; must never show in an error
REFUSAL_DEADLINE = 3.0  # seconds a required layer may take to give up on a wrong CA (connect: 2 s)
SETTLE_DEADLINE = 15.0  # seconds for replication, the sentinels' view or the cluster to settle


def _tls_missing() -> str | None:
    """Why these tests cannot run here, or None."""
    if shutil.which("openssl") is None:
        return "the openssl CLI is not installed: the TLS tests make their CA with it"
    if shutil.which("redis-server") is None:
        return None  # as for every Redis test: a failure (the certs fixture), not a skip
    # A build without TLS does not know the directive ("Bad directive"); one with it exits because
    # it was told to listen nowhere.
    probe = subprocess.run(
        ["redis-server", "--port", "0", "--tls-port", "0", "--save", ""], capture_output=True, text=True, timeout=10
    )
    if "Bad directive" in probe.stdout + probe.stderr:
        return "this redis-server is built without TLS (BUILD_TLS=yes)"
    return None


_MISSING = _tls_missing()
if _MISSING:
    pytestmark.append(pytest.mark.skip(reason=_MISSING))


# ---------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    """A CA, the certificate and key of 127.0.0.1 it signed (server and client), and a CA that
    signed nothing here."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def make_certs(directory: Path) -> Certs:
    """EC P-256 keys (fast to make); extensions as a strict verifier wants them."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, capture_output=True, check=True, timeout=30)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=chatbot test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    openssl("req", "-new", *key, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (directory / "node.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        encoding="utf-8",
    )
    openssl(
        "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "node.pem", "-days", "2", "-extfile", "node.ext",
    )  # fmt: skip
    return Certs(directory / "ca.pem", directory / "node.pem", directory / "node.key", directory / "other-ca.pem")


def server_tls(certs: Certs, *, auth_clients: str) -> list[str]:
    """redis-server's TLS arguments (the same certificate serves and, for replication, connects)."""
    return [
        "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", auth_clients,
    ]  # fmt: skip


def client(certs: Certs, port: int, password: str | None = None) -> redis.Redis:
    """A plain TLS client of one node or sentinel, to inspect it."""
    return redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca), ssl_certfile=str(certs.cert),
        ssl_keyfile=str(certs.key), password=password, socket_timeout=2, decode_responses=True,
    )  # fmt: skip


# ---------------------------------------------------------------------- processes


class TlsProcess:
    """One redis-server (a node, or a sentinel given its config file) listening on a TLS port only."""

    def __init__(self, certs: Certs, port: int, args: Sequence[str]) -> None:
        self.certs = certs
        self.port = port
        self.args = list(args)
        self._dir = tempfile.TemporaryDirectory(prefix="chatbot-tls-")
        self.dir = Path(self._dir.name)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING over TLS (NOAUTH counts: it is up)."""
        self._proc = subprocess.Popen(
            ["redis-server", *self.args], cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_answering(self._proc, self._answers, f"redis-server on TLS port {self.port}")

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        context.load_cert_chain(str(self.certs.cert), str(self.certs.key))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def cleanup(self) -> None:
        """Kill it and remove its directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


def data_node(certs: Certs, port: int, *extra: str, auth_clients: str = "no") -> TlsProcess:
    """A data node: TLS port only, no persistence, a password (also its primary's, `masterauth`)."""
    args = [
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--loglevel", "warning", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
        *server_tls(certs, auth_clients=auth_clients), *extra,
    ]  # fmt: skip
    return TlsProcess(certs, port, args)


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll `check()` (a server's state, which has no event) until true, or fail naming `what`."""
    deadline = time.monotonic() + SETTLE_DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {SETTLE_DEADLINE:g} s")
        time.sleep(0.02)


class TlsSentinels:
    """A primary, a replica and three sentinels, all TLS only; the sentinels watch over TLS."""

    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        first, second = free_port(), free_port()
        self.primary = data_node(certs, first, "--tls-replication", "yes", "--repl-diskless-sync-delay", "0")
        self.replica = data_node(certs, second, "--tls-replication", "yes", "--replicaof", "127.0.0.1", str(first))
        self.sentinels = [TlsProcess(certs, free_port(), []) for _ in range(3)]
        for sentinel in self.sentinels:
            config = sentinel.dir / "sentinel.conf"  # Sentinel rewrites its file: one each
            tls = server_tls(certs, auth_clients="no")
            config.write_text(
                f"port 0\ntls-port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.dir}\nloglevel warning\n"
                + "".join(f"{tls[i].removeprefix('--')} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
                + "tls-replication yes\n"  # a sentinel's links to the nodes (and the others) are TLS
                f"sentinel monitor {SERVICE} 127.0.0.1 {first} 2\nsentinel auth-pass {SERVICE} {PASSWORD}\n",
                encoding="utf-8",
            )
            sentinel.args = [str(config), "--sentinel"]

    def url(self, ca: Path) -> str:
        """The URL of the service with the data nodes' password, trusting `ca`."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"rediss+sentinel://:{PASSWORD}@{hosts}/{SERVICE}?ssl_ca_certs={ca}"

    def start(self) -> None:
        """Start everything; return once the replica is in sync (over TLS) and every sentinel has
        the primary's INFO (its TLS link to it works: it lists the replica) and knows the others."""
        self.primary.start()
        self.replica.start()
        with client(self.certs, self.replica.port, password=PASSWORD) as replica:
            wait_until(lambda: replica.info("replication")["master_link_status"] == "up", "the replica was not in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        for sentinel in self.sentinels:
            with client(self.certs, sentinel.port) as view:

                def settled() -> bool:
                    master = view.sentinel_master(SERVICE)
                    return bool(view.sentinel_slaves(SERVICE)) and master["num-other-sentinels"] == 2

                wait_until(settled, f"sentinel {sentinel.port} did not see the replica and the other sentinels")

    def cleanup(self) -> None:
        for process in (*self.sentinels, self.replica, self.primary):
            process.cleanup()


class TlsCluster:
    """Three cluster primaries on TLS ports only, cluster bus over TLS, client certificates wanted."""

    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--tls-cluster", "yes")
        self.nodes = [data_node(certs, port, *cluster, auth_clients="yes") for port in _free_ports(3)]

    def url(self, ca: Path) -> str:
        """The URL of every node with the password and the client certificate, trusting `ca`."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        tls = f"ssl_ca_certs={ca}&ssl_certfile={self.certs.cert}&ssl_keyfile={self.certs.key}"
        return f"rediss+cluster://:{PASSWORD}@{hosts}?{tls}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli", "--tls", "--cacert", str(self.certs.ca), "--cert", str(self.certs.cert),
                "--key", str(self.certs.key), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            env={**os.environ, "REDISCLI_AUTH": PASSWORD},
            capture_output=True, timeout=READY_DEADLINE, check=True,
        )  # fmt: skip
        for node in self.nodes:
            with client(self.certs, node.port, password=PASSWORD) as view:

                def ok() -> bool:
                    info: dict[str, str] = view.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
                    return info["cluster_state"] == "ok" and info["cluster_slots_ok"] == "16384"

                wait_until(ok, f"cluster node {node.port} was not ok")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_sentinels(certs: Certs) -> Iterator[TlsSentinels]:
    deployment = TlsSentinels(certs)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.cleanup()


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs) -> Iterator[TlsCluster]:
    cluster = TlsCluster(certs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


# ---------------------------------------------------------------------- the tests


async def layers_and_stores_work(url: str) -> None:
    """Two layers and two stores on `url`, each with its own client made from the URL."""
    prefix = unique_prefix()
    one = RedisChannelLayer(url=url, prefix=prefix, required=True, connect_timeout=2, socket_timeout=2)
    two = RedisChannelLayer(url=url, prefix=prefix, required=True, connect_timeout=2, socket_timeout=2)
    writer = RedisConversationStore(url=url, prefix=prefix, process_id="writer", write_interval=0)
    reader = RedisConversationStore(url=url, prefix=prefix, process_id="reader", write_interval=0)
    try:
        await one.start()
        await two.start()
        member = await two.new_channel()
        await two.group_add("users", member)
        await one.group_send("users", {"type": "note", "text": "您好"})
        assert await asyncio.wait_for(two.receive(member), 5) == {"type": "note", "text": "您好"}
        assert (await one.health()).ok and (await two.health()).ok

        await writer.start()
        await reader.start()
        conversation = await writer.create()
        for n in (1, 2):
            writer.append(conversation, {"type": "user", "msg": f"第{n}句", "id": f"m{n}"})
        await writer.flush()
        await writer.release(conversation)
        await reader.adopt(conversation)
        frames = await reader.read_since(conversation, 0)
        assert [(f["seq"], f["msg"]) for f in frames] == [(1, "第1句"), (2, "第2句")]
        assert (await reader.health())[0]
    finally:
        for closing in (writer, reader, one, two):
            await closing.close()


async def refused(url: str) -> str:
    """The error a required layer on `url` refuses to start with (and its causes), as text."""
    layer = RedisChannelLayer(url=url, prefix=unique_prefix(), required=True, connect_timeout=2, socket_timeout=2)
    with pytest.raises(LayerUnavailableError) as caught:
        async with asyncio.timeout(REFUSAL_DEADLINE):  # a refused handshake is not retried for long
            await layer.start()
    await layer.close()
    texts = []
    error: BaseException | None = caught.value
    while error is not None:
        texts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


async def test_sentinel_over_tls(tls_sentinels: TlsSentinels, certs: Certs) -> None:
    await layers_and_stores_work(tls_sentinels.url(certs.ca))


async def test_cluster_over_tls(tls_cluster: TlsCluster, certs: Certs) -> None:
    await layers_and_stores_work(tls_cluster.url(certs.ca))


@pytest.mark.parametrize("deployment", ["tls_sentinels", "tls_cluster"])
async def test_a_wrong_ca_is_refused_without_the_password(
    deployment: str, certs: Certs, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(deployment).url(certs.other_ca)
    text = await refused(url)
    first_line = text.splitlines()[0]
    assert "certificate verify failed" in first_line, text
    assert PASSWORD not in text
