"""The transport guard (ops/guard.py) on the real server, run as a subprocess over real sockets."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"  # no blank line: the head never ends


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []

    def drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)


@contextlib.contextmanager
def run_server(
    tmp_path: Path, server_yaml: str, preexec: Callable[[], None] | None = None, extra: str = ""
) -> Iterator[Server]:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}, {server_yaml}}}\nbot: {{name: echo}}\n{extra}", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("CHATBOT_CONFIG", "CHATBOT_PORT", "CHATBOT_HOST", "CHATBOT_LOG_FORMAT"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatbot_server", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=preexec,
    )
    server = Server(proc, port)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for the "listening" log line, not for a timer
        server.lines.append(line)
        if "listening" in line:
            break
    else:
        pytest.fail(f"server exited with {proc.wait()} before listening:\n{''.join(server.lines)}")
    drainer = threading.Thread(target=server.drain, daemon=True)
    drainer.start()
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        drainer.join(timeout=10)
        proc.stdout.close()


def half_open(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(PARTIAL_HEAD)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing; fails if it is still open after `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"connection still open after {seconds} s")
    return received


def get(port: int, path: str = "/healthz", source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """One request with Connection: close; the whole answer (fails on a hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        return closed_within(sock, timeout)


def test_half_open_connection_is_closed_after_handshake_timeout(tmp_path: Path) -> None:
    with run_server(tmp_path, "handshake_timeout: 0.5") as server:
        slow = half_open(server.port)
        started = time.monotonic()
        assert get(server.port).startswith(b"HTTP/1.1 200")  # a normal request is served meanwhile
        assert closed_within(slow, 10) == b""
        assert time.monotonic() - started >= 0.4
        slow.close()


def test_slowly_trickled_second_request_head_is_closed_by_keepalive_timeout(tmp_path: Path) -> None:
    with run_server(tmp_path, "handshake_timeout: 30, keepalive_timeout: 1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
            while len(body) < length:
                body += sock.recv(4096)
            sock.sendall(PARTIAL_HEAD)  # the second request's head never ends
            assert closed_within(sock, 20) == b""


def test_unfinished_connections_over_the_per_ip_cap_are_closed_at_once(tmp_path: Path) -> None:
    with run_server(tmp_path, "handshake_timeout: 60, max_unfinished_per_ip: 3") as server:
        held = [half_open(server.port) for _ in range(3)]
        extra = half_open(server.port)
        assert closed_within(extra, 10) == b""
        # Another address is not affected, and the held ones stay open (within their deadline).
        assert get(server.port, source="127.0.0.2").startswith(b"HTTP/1.1 200")
        for sock in held:
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(1)
            sock.close()
        extra.close()
        # Freed slots are counted down: the same address is served again.
        deadline = time.monotonic() + 20
        while not get(server.port).startswith(b"HTTP/1.1 200"):  # closes are seen by the server asynchronously
            assert time.monotonic() < deadline, "slots were not freed"


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_fd_reserve_sheds_new_connections_before_the_process_runs_out(tmp_path: Path) -> None:
    yaml = "handshake_timeout: 120, max_unfinished_per_ip: 20, fd_reserve: 32"
    with run_server(tmp_path, yaml, preexec=_low_fd_limit) as server:
        lines_at_start = len(server.lines)
        held = []
        try:
            # 300 > 256 half-open connections, 10 per loopback address so the per-IP cap does not act.
            for i in range(300):
                held.append(half_open(server.port, source=f"127.0.0.{2 + i // 10}"))
            for _ in range(3):
                answer = get(server.port, source="127.0.1.1")  # never hangs
                assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 503")), answer[:100]
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        # Once they are gone the server answers normally again.
        deadline = time.monotonic() + 30
        while not get(server.port, source="127.0.1.1").startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline, "still shedding after the connections closed"
    assert len(server.lines) - lines_at_start < 20, "".join(server.lines[-20:])


def test_monitoring_listener_serves_healthz_and_metrics_off_the_main_port(tmp_path: Path) -> None:
    monitor = free_port()
    with run_server(tmp_path, "handshake_timeout: 5", extra=f"monitoring: {{port: {monitor}}}\n") as server:
        assert get(server.port, "/metrics").startswith(b"HTTP/1.1 404")
        assert get(server.port, "/healthz").startswith(b"HTTP/1.1 404")
        assert get(server.port, "/").startswith(b"HTTP/1.1 200")
        assert get(monitor, "/healthz").startswith(b"HTTP/1.1 200")
        metrics = get(monitor, "/metrics")
        assert metrics.startswith(b"HTTP/1.1 200")
        # The guard's counters are exposed with the rest.
        assert b"chatbot_connections_shed_total" in metrics and b"chatbot_http_connections" in metrics
