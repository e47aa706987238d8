"""Throwaway redis-server processes for tests; the shared Redis on port 6379 is never touched."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

INSTALL_HINT = "redis-server is not installed; install it with `apt-get install redis-server`"
READY_DEADLINE = 10.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers PING (a raw socket: no client to close)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A private redis-server on a fixed port that tests can kill and start again."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="chatbot-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self.extra_args = list(extra_args)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (again) on the same port and wait until it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_answering(self._proc, lambda: ping(self.port), f"redis-server on port {self.port}")
        except RuntimeError:
            self.kill()
            raise

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered (a hung Redis)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server: clients see an abrupt outage, all data is gone."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    @property
    def dir(self) -> str:
        """The server's working directory (its cluster config file, if any, lives here)."""
        return self._dir.name

    def cleanup(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        self._dir.cleanup()


def wait_answering(proc: subprocess.Popen[bytes], answers: Callable[[], bool], what: str) -> None:
    """Wait until a just-started server `answers()`; fail naming `what` if it exits or is silent
    for READY_DEADLINE (a child process has no readiness event: this polls)."""
    deadline = time.monotonic() + READY_DEADLINE
    while not answers():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer in {READY_DEADLINE}s")
        time.sleep(0.01)


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return "t" + secrets.token_hex(6)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a private redis-server for the whole session (or $CHATBOT_TEST_REDIS_URL)."""
    url = os.environ.get("CHATBOT_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A private, running redis-server for one test, which it may kill() and start() again."""
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test."""
    return unique_prefix()
