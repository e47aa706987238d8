"""`python -m chatbot_server --workers 2`: real processes on one port, a private redis-server (#15)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from chatbot_server.config import load_settings
from chatbot_server.errors import ConfigError
from chatbot_server.layers.base import process_of
from chatbot_server.layers.redis import RedisChannelLayer
from chatbot_server.store.redis import conversation_keys

from .helpers import wait_healthy
from .redis_server import RedisProcess, free_port, unique_prefix

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 20.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def _free_pair() -> int:
    """A port p with p and p + 1 free (worker i's monitoring listener is monitoring.port + i)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


class Supervisor:
    """`python -m chatbot_server --workers 2` as a child; its log lines are the events awaited."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "workers.yaml"
        self.config.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *args: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatbot_server",
            "--config",
            str(self.config),
            "--workers",
            "2",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    async def wait_for(self, pattern: str, after: int = 0) -> tuple[re.Match[str], int]:
        """The first log line from `after` on matching `pattern`, and the index after it."""
        regex = re.compile(pattern)
        found: list[tuple[re.Match[str], int]] = []

        def seen() -> bool:
            for n in range(after, len(self.lines)):
                match = regex.search(self.lines[n])
                if match:
                    found.append((match, n + 1))
                    return True
            if self.lines and self.lines[-1] == "<eof>":
                raise AssertionError(f"no {pattern!r} before the supervisor exited:\n" + "\n".join(self.lines))
            return False

        try:
            async with asyncio.timeout(DEADLINE), self._changed:
                await self._changed.wait_for(seen)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} in {DEADLINE} s:\n" + "\n".join(self.lines)) from None
        return found[0]

    async def ready(self, after: int = 0) -> tuple[dict[int, int], int]:
        """Worker index -> pid of the next two `workers.ready` lines."""
        pids: dict[int, int] = {}
        while len(pids) < 2:
            match, after = await self.wait_for(r"workers\.ready index=(\d+) pid=(\d+)", after)
            pids[int(match[1])] = int(match[2])
        return pids, after

    def processes(self) -> dict[str, int]:
        """Layer process id -> worker pid, from the workers' listening lines."""
        found = (re.search(r" listening .* pid=(\d+) process=(\S+) worker=\d", line) for line in self.lines)
        return {m[2]: int(m[1]) for m in found if m}

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def stop(self) -> int:
        assert self.proc is not None and self._reader is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._reader
        return code


def _config(redis_url: str, prefix: str, monitoring_port: int = 0) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": free_port(), "shutdown_timeout": 1},
        "layer": {
            "backend": "redis",
            "redis": {"url": redis_url, "prefix": prefix, "heartbeat_interval": 0.3, "required": True},
        },
        "history": {"takeover_timeout": 1},
        "bot": {"name": "echo"},
        "monitoring": {"port": monitoring_port},
    }


@pytest.fixture
async def supervisor(tmp_path: Path, redis_process: RedisProcess) -> AsyncIterator[Supervisor]:
    sup = Supervisor(tmp_path, _config(redis_process.url, unique_prefix(), _free_pair()))
    yield sup
    if sup.proc is not None:
        await sup.stop()


@dataclass
class Chat:
    ws: aiohttp.ClientWebSocketResponse
    conversation: str
    process: str
    frames: list[dict[str, Any]]


async def _members(layer: RedisChannelLayer, known: set[str]) -> str:
    members = set(await layer.group_members("users")) - known
    assert len(members) == 1, members
    known.update(members)
    return members.pop()


async def _open(session: aiohttp.ClientSession, url: str, layer: RedisChannelLayer, known: set[str]) -> Chat:
    ws = await session.ws_connect(url)
    first: dict[str, Any] = await ws.receive_json(timeout=5)  # sent once the socket joined its groups
    return Chat(ws, first["conversation"], process_of(await _members(layer, known)) or "", [first])


async def _all_stored(client: aioredis.Redis, prefix: str, chats: list[Chat]) -> None:
    """Await every chat's frames in Redis (the store writes behind), woken by keyspace events."""
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"__keyspace@0__:{prefix}:conv:*")
    try:
        async with asyncio.timeout(5):
            while True:
                lengths = [await client.llen(conversation_keys(prefix, c.conversation)[0]) for c in chats]
                if all(n == len(c.frames) for n, c in zip(lengths, chats, strict=True)):
                    return
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    finally:
        await pubsub.aclose()


async def test_two_workers_one_port_restart_resume_and_broadcast(
    supervisor: Supervisor, redis_process: RedisProcess
) -> None:
    await supervisor.start()
    pids, after = await supervisor.ready()
    assert set(pids) == {0, 1} and len(set(pids.values())) == 2
    for index in (0, 1):  # each line says which worker wrote it
        await supervisor.wait_for(rf" listening url={supervisor.url}/ pid=\d+ process=\S+ worker={index}$")
    processes = supervisor.processes()
    assert sorted(processes.values()) == sorted(pids.values())
    prefix = json.loads(supervisor.config.read_text())["layer"]["redis"]["prefix"]
    monitoring = json.loads(supervisor.config.read_text())["monitoring"]["port"]
    client = aioredis.Redis.from_url(redis_process.url)
    await client.config_set("notify-keyspace-events", "Kl")
    host = RedisChannelLayer(url=redis_process.url, prefix=prefix, required=True)  # a host app's layer
    await host.start()
    try:
        async with aiohttp.ClientSession() as session:
            for index in pids:  # worker i's own /healthz on monitoring.port + i
                async with session.get(f"http://127.0.0.1:{monitoring + index}/healthz") as response:
                    assert response.status == 200
            known: set[str] = set()
            chats: list[Chat] = []
            # The kernel spreads connections over both listeners (SO_REUSEPORT hashes the 4-tuple).
            while len({c.process for c in chats}) < 2:
                assert len(chats) < 64, "every connection reached the same worker"
                chats.append(await _open(session, f"{supervisor.url}/ws", host, known))
            for n, chat in enumerate(chats):
                await chat.ws.send_json({"type": "message", "text": f"第{n}个", "id": f"m{n}"})
                chat.frames += [await chat.ws.receive_json(timeout=5) for _ in range(2)]
            await host.group_send("users", {"type": "chat.broadcast", "text": "系统维护通知"})
            for chat in chats:  # on both workers
                assert (await chat.ws.receive_json(timeout=5))["msg"] == "系统维护通知"
            await _all_stored(client, prefix, chats)

            victim = chats[0].process
            victim_pid = processes[victim]
            index = next(i for i, pid in pids.items() if pid == victim_pid)
            os.kill(victim_pid, signal.SIGKILL)
            _, after = await supervisor.wait_for(rf"workers\.exited index={index} pid={victim_pid} code=-9", after)
            match, after = await supervisor.wait_for(rf"workers\.ready index={index} pid=(\d+)", after)
            restarted = int(match[1])
            assert restarted not in pids.values()
            lost = [c for c in chats if c.process == victim]
            kept = [c for c in chats if c.process != victim]
            for chat in lost:
                msg = await chat.ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)

            # Each conversation of the killed worker goes on, on a live worker, exactly.
            async def resume(chat: Chat) -> Chat:
                url = f"{supervisor.url}/ws?conversation={chat.conversation}&last_seq=1"
                again = await session.ws_connect(url)
                replay = [await again.receive_json(timeout=5) for _ in range(3)]
                assert replay[:2] == chat.frames[1:3]
                assert replay[2]["event"] == "resumed" and replay[2]["last_seq"] == 3
                await again.send_json({"type": "message", "text": "还在吗", "id": "later"})
                frames = [await again.receive_json(timeout=5) for _ in range(2)]
                assert [(f["type"], f["seq"]) for f in frames] == [("user", 4), ("reply", 5)]
                return Chat(again, chat.conversation, "", frames)

            # Together: each waits for the dead holder's takeover answer (history.takeover_timeout).
            resumed = await asyncio.gather(*(resume(chat) for chat in lost))
            holders = set(await host.group_members("users")) - known
            assert len(holders) == len(lost) and victim not in {process_of(c) for c in holders}

            await host.group_send("users", {"type": "chat.broadcast", "text": "第二次通知"})
            for chat in kept + resumed:
                assert (await chat.ws.receive_json(timeout=5))["msg"] == "第二次通知"

            # A second quick death backs off instead of spinning.
            os.kill(restarted, signal.SIGKILL)
            await supervisor.wait_for(rf"workers\.restart index={index} delay=0\.5s failures=2", after)
            _, after = await supervisor.wait_for(rf"workers\.ready index={index} pid=(?!{restarted}\b)\d+", after)

            # SIGTERM drains: sockets get 1001, workers exit, the supervisor exits 0.
            supervisor.signal(signal.SIGTERM)
            for chat in kept:
                while (msg := await chat.ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
                    pass
                assert chat.ws.close_code == 1001
            for chat in chats + resumed:
                await chat.ws.close()  # closed by the server or dead: releases the client's connection
            assert await supervisor.stop() == 0
            await supervisor.wait_for(r"workers\.stopped workers=2 killed=0", after)
    finally:
        await host.close()
        await client.aclose()


async def test_sighup_replaces_workers_without_refusing_connections(
    tmp_path: Path, redis_process: RedisProcess
) -> None:
    sup = Supervisor(tmp_path, _config(redis_process.url, unique_prefix()))
    await sup.start()
    try:
        old, after = await sup.ready()
        outcomes: dict[str, int] = {}
        done = asyncio.Event()

        async def probe() -> None:
            # A new connection per request: each one is handed to a listener by the kernel.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                while not done.is_set():
                    try:
                        async with session.get(f"{sup.url}/healthz") as response:
                            outcome = str(response.status)
                    except aiohttp.ClientError as exc:
                        outcome = type(exc).__name__
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

        prober = asyncio.get_running_loop().create_task(probe())
        sup.signal(signal.SIGHUP)
        match, after = await sup.wait_for(r"workers\.reloaded pids=(\d+),(\d+)", after)
        done.set()
        await prober
        new = {int(match[1]), int(match[2])}
        assert len(new) == 2 and not new & set(old.values())
        assert outcomes.get("ClientConnectorError", 0) == 0, outcomes  # never refused: the port never went dark
        assert outcomes.get("200", 0) >= 20, outcomes

        # A broken file on SIGHUP is refused; the running workers keep serving.
        text = sup.config.read_text()
        sup.config.write_text(text.replace('"port": 0', '"port": "nine"'), encoding="utf-8")
        sup.signal(signal.SIGHUP)
        await sup.wait_for(r"workers\.reload_refused error=.*monitoring\.port: must be an integer", after)
        async with aiohttp.ClientSession() as session, session.get(f"{sup.url}/healthz") as response:
            assert response.status == 200
        for pid in new:
            os.kill(pid, 0)  # still there
        assert not [line for line in sup.lines[after:] if "workers.ready" in line]
    finally:
        assert await sup.stop() == 0


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, redis_process: RedisProcess) -> None:
    sup = Supervisor(tmp_path, _config(redis_process.url, unique_prefix()))
    await sup.start()
    try:
        pids, _ = await sup.ready()
        sup.signal(signal.SIGKILL)
        for index in pids:  # the link's end in the dead supervisor closed: each worker drains
            await sup.wait_for(rf"worker\.orphaned reason=supervisor_gone worker={index}")
            await sup.wait_for(rf" stop shed=.* worker={index}$")
        # The workers' stdout is the pipe: it ends when the last worker has exited.
        await sup.wait_for(r"^<eof>$")
    finally:
        await sup.stop()


async def test_a_worker_that_cannot_listen_stops_the_supervisor_with_1(
    tmp_path: Path, redis_process: RedisProcess
) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: no worker may join it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = _config(redis_process.url, unique_prefix())
        config["server"]["port"] = taken.getsockname()[1]
        sup = Supervisor(tmp_path, config)
        await sup.start()
        await sup.wait_for(r"workers\.start_failed index=\d code=1: stopping")
        assert sup.proc is not None
        assert await asyncio.wait_for(sup.proc.wait(), DEADLINE) == 1
        await sup.stop()
    assert any("cannot listen on" in line for line in sup.lines)


async def test_template_instances_share_the_port_with_worker_index(tmp_path: Path, redis_process: RedisProcess) -> None:
    # chatbot-server@0 and @1 (docs/deployment.md#workers): no supervisor, one port, SO_REUSEPORT.
    config = _config(redis_process.url, unique_prefix(), _free_pair())
    path = tmp_path / "instance.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    url = f"http://127.0.0.1:{config['server']['port']}"
    monitoring = config["monitoring"]["port"]
    procs = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "chatbot_server", "-c", str(path), "--worker-index", str(i)),
            env=_env(),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for i in (0, 1)
    ]
    host = RedisChannelLayer(url=redis_process.url, prefix=config["layer"]["redis"]["prefix"], required=True)
    await host.start()
    try:
        async with aiohttp.ClientSession() as session:
            for index, proc in enumerate(procs):  # each instance's own /healthz
                health = f"http://127.0.0.1:{monitoring + index}/healthz"
                await wait_healthy(session, health, exited=_exited(proc), deadline=DEADLINE)
            known: set[str] = set()
            chats: list[Chat] = []
            while len({c.process for c in chats}) < 2:
                assert len(chats) < 64, "every connection reached the same instance"
                chats.append(await _open(session, f"{url}/ws", host, known))
            await host.group_send("users", {"type": "chat.broadcast", "text": "两个实例"})
            for chat in chats:
                assert (await chat.ws.receive_json(timeout=5))["msg"] == "两个实例"
                await chat.ws.close()
    finally:
        await host.close()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), 15) for proc in procs]
    assert codes == [0, 0]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatbot_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_env(), **(env or {})},
        cwd=ROOT,
    )


def test_memory_layer_with_workers_exits_2_naming_layer_backend(tmp_path: Path) -> None:
    config = tmp_path / "memory.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nbot: {{name: echo}}\n", encoding="utf-8")
    for args, env in (
        (("--workers", "2"), None),
        ((), {"CHATBOT_WORKERS": "2"}),
        (("--workers", "2", "--check-config"), None),
        (("--worker-index", "0"), None),  # one of a group run by hand (a systemd template unit)
    ):
        result = _run("--config", str(config), *args, env=env)
        assert result.returncode == 2, result
        assert "server.workers" in result.stderr and "layer.backend is memory" in result.stderr
        assert "docs/deployment.md#workers" in result.stderr and "Traceback" not in result.stderr


def test_worker_rules(tmp_path: Path) -> None:
    redis = "layer: {backend: redis}\n"
    cases = {
        "history: {backend: memory}\n": "history.backend is memory",
        "server: {port: 0}\n": "server.port 0",
        "server: {port: 9101}\nmonitoring: {port: 9100}\n": "monitoring.port + i",
    }
    for extra, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(redis + extra, encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            load_settings(path, env={"CHATBOT_WORKERS": "3"})
        assert error.value.key == "server.workers"
        assert load_settings(path, env={}).server.workers == 1  # one process: no such rule
    path.write_text(redis + "monitoring: {port: 9100}\n", encoding="utf-8")
    assert load_settings(path, overrides={"server.workers": 4}, env={}).server.workers == 4
    with pytest.raises(ConfigError, match=r"1\.\.256"):
        load_settings(path, overrides={"server.workers": 0}, env={})


async def test_gunicorn_aiohttp_worker_serves_the_app(tmp_path: Path, redis_process: RedisProcess) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")
    config = tmp_path / "g.yaml"
    config.write_text(json.dumps(_config(redis_process.url, unique_prefix())), encoding="utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "chatbot_server.gunicorn_app:app", "-k", "aiohttp.GunicornWebWorker"]
    cmd += ["-w", "2", "-b", f"127.0.0.1:{port}"]
    env = {**_env(), "CHATBOT_CONFIG": str(config), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"http://127.0.0.1:{port}/healthz", exited=_exited(proc), deadline=DEADLINE)
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "greeting"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    memory = tmp_path / "memory.yaml"
    memory.write_text("bot: {name: echo}\n", encoding="utf-8")
    env["CHATBOT_CONFIG"] = str(memory)
    refused = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode != 0 and "layer.backend is memory" in stderr.decode()


def _exited(proc: asyncio.subprocess.Process) -> Callable[[], str | None]:
    """For wait_healthy: why `proc` is gone, or None while it runs."""
    return lambda: None if proc.returncode is None else f"exited with {proc.returncode}"
