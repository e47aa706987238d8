"""N worker processes on one port (`server.workers`, `--workers N`), supervised.

With N > 1, `python -m chatbot_server` becomes a supervisor: it serves nothing itself, starts N
workers that each run the single-process path (`cli.serve`, the transport guard in front) with
their listening socket made with SO_REUSEPORT, restarts a worker that dies (with a backoff),
drains all on SIGTERM/SIGINT and replaces all, one at a time, on SIGHUP. See docs/deployment.md.

Why subprocesses re-running `sys.executable -m chatbot_server ARGS --worker-index i`, not fork
and not multiprocessing:

- forking a process that runs an asyncio loop (or has imported one with threads, as the Redis
  client may) copies its loop, selector and locks into the child: CPython warns against it
  (gh-84559, "fork() in a multi-threaded process"); the supervisor never builds the app at all;
- multiprocessing with spawn would pickle the settings (frozen dataclasses over MappingProxyType,
  which does not pickle) and adds its own resource tracker and pipes; a worker started from its
  command line is exactly what an operator would run by hand, reads the same file, environment
  and flags, and logs to the same stdout;
- each worker gets one end of a socket pair (`--supervisor-fd`): it writes one byte once it
  listens (an event to await, no polling of a port all workers share), and when the supervisor's
  end closes (the supervisor died, even by SIGKILL) the worker stops, so no orphan keeps the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .errors import ConfigError
from .ops.logs import configure_logging

log = logging.getLogger("chatbot_server.workers")

#: Seconds a new worker has to build its app and listen (the FAQ bot loads its knowledge base).
READY_TIMEOUT = 60.0
#: Seconds beyond server.shutdown_timeout a worker gets to exit after SIGTERM before SIGKILL.
DRAIN_MARGIN = 5.0
#: A worker that ran this long before dying restarts at once; quicker deaths back off.
STABLE_AFTER = 30.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class Worker:
    """This process as worker `index` of a group that shares server.port (SO_REUSEPORT).

    `link_fd` is its end of the socket pair with the supervisor (None when run by hand, e.g. by
    a systemd template unit with `--worker-index %i`).
    """

    def __init__(self, index: int, link_fd: int | None = None) -> None:
        self.index = index
        self._link = socket.socket(fileno=link_fd) if link_fd is not None else None
        if self._link is not None:
            self._link.setblocking(False)

    def monitoring_port(self, base: int) -> int:
        """The port of this worker's monitoring listener: one port cannot be shared by N apps."""
        return base + self.index

    def tag_logs(self) -> None:
        """End every log line of this process with `worker=<index>` (text and JSON alike)."""
        tag_logs(f"worker={self.index}")

    def watch(self, stop: asyncio.Event) -> None:
        """Set `stop` when the supervisor is gone (its end of the link closed)."""
        link = self._link
        if link is None:
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = link.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the supervisor sends nothing: readable means its end closed
                loop.remove_reader(link.fileno())
                log.warning("worker.orphaned reason=supervisor_gone")
                stop.set()

        loop.add_reader(link.fileno(), readable)

    def ready(self) -> None:
        """Tell the supervisor this worker listens (one byte on the link)."""
        if self._link is not None:
            self._link.send(b"R")

    def close(self) -> None:
        """Close the link (the process is about to exit)."""
        if self._link is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._link.fileno())
            self._link.close()


def tag_logs(tag: str) -> None:
    """End every log line of this process (the root logger's handlers) with ` <tag>`."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag(tag))


class _Tag(logging.Filter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "chatbot_tag"):  # once, whatever the number of handlers
            record.chatbot_tag = self.tag
            # Appended after the key=value pairs; with no '%' in it, record.args format as before.
            record.msg = f"{record.msg} {self.tag}"
        return True


@dataclass(eq=False)
class _Process:
    index: int
    proc: asyncio.subprocess.Process
    link: socket.socket
    ready_at: float | None = None
    retired: bool = False  # told to stop by the supervisor: its exit is no crash
    code: int | None = None


@dataclass(eq=False)
class _Slot:
    worker: _Process | None = None
    failures: int = 0  # quick deaths in a row
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def supervise(argv: Sequence[str], settings: Settings, load: Callable[[], Settings]) -> int:
    """Run the supervisor until SIGTERM/SIGINT; returns the exit code.

    `argv` is the command line to give every worker (plus its index); `load` re-reads the
    settings on SIGHUP (raising ConfigError).
    """
    return asyncio.run(Supervisor(argv, settings, load).run())


class Supervisor:
    """Starts, restarts, reloads and drains the workers."""

    def __init__(self, argv: Sequence[str], settings: Settings, load: Callable[[], Settings]) -> None:
        self._argv = list(argv)
        self._settings = settings
        self._load = load
        self._slots: dict[int, _Slot] = {}
        self._live: set[_Process] = set()  # every spawned process not yet reaped
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._started = False  # a SIGHUP before every worker listens waits for that

    async def run(self) -> int:
        """Start the workers and supervise them; 0 after a drain, else a failed first start's code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        server = self._settings.server
        log.info("workers.start workers=%d host=%s port=%d", server.workers, server.host, server.port)
        try:
            first = asyncio.ensure_future(self._start_all())
            stopped = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not first.done():  # asked to stop while starting
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)
                return 0
            code = first.result()
            if code == 0:
                self._started = True
                if self._reload_again:
                    self._on_sighup()
                await self._stopping.wait()
            return code
        finally:
            self._stopping.set()
            await self._drain()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def _stop(self, signum: int) -> None:
        if not self._stopping.is_set():
            log.info("workers.stop signal=%s", signal.Signals(signum).name)
        self._stopping.set()

    def _background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _drain_deadline(self) -> float:
        return self._settings.server.shutdown_timeout + DRAIN_MARGIN

    async def _start_all(self) -> int:
        count = self._settings.server.workers
        started = await asyncio.gather(*(self._start(index) for index in range(count)))
        for worker in started:
            if worker.ready_at is None:
                log.error("workers.start_failed index=%d code=%s: stopping", worker.index, worker.code)
                return worker.code if worker.code is not None and worker.code > 0 else 1
        self._slots = {worker.index: _Slot(worker=worker) for worker in started}
        log.info("workers.started pids=%s", ",".join(str(w.proc.pid) for w in started))
        return 0

    async def _spawn(self, index: int) -> _Process:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chatbot_server",
                *self._argv,
                "--worker-index",
                str(index),
                "--supervisor-fd",
                str(theirs.fileno()),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),  # only this worker gets it (close_fds closes the rest)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker holds its end now: its exit closes it
        ours.setblocking(False)
        worker = _Process(index, proc, ours)
        self._live.add(worker)
        self._background(self._watch(worker))
        return worker

    async def _start(self, index: int) -> _Process:
        """Spawn worker `index` and await its "listening" byte; `ready_at` stays None if it failed."""
        worker = await self._spawn(index)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                # One byte once it listens; b"" when it exited first (its end of the pair closed).
                said = await loop.sock_recv(worker.link, 1)
        except TimeoutError:
            log.error("workers.start_timeout index=%d pid=%d after=%gs", index, worker.proc.pid, READY_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            said = b""
        # Exited already (its watcher saw it first and left it to us): no use reporting it ready.
        if said and worker.proc.returncode is None:
            worker.ready_at = loop.time()
            log.info("workers.ready index=%d pid=%d", index, worker.proc.pid)
            return worker
        worker.code = await worker.proc.wait()
        worker.link.close()
        log.error("workers.exited_at_start index=%d pid=%d code=%d", index, worker.proc.pid, worker.code)
        return worker

    async def _watch(self, worker: _Process) -> None:
        code = await worker.proc.wait()
        self._live.discard(worker)
        if worker.ready_at is None:
            return  # _start reports it
        worker.link.close()
        if worker.retired or self._stopping.is_set():
            return
        log.warning("workers.exited index=%d pid=%d code=%d", worker.index, worker.proc.pid, code)
        self._background(self._restart(worker))

    async def _restart(self, dead: _Process) -> None:
        slot = self._slots.get(dead.index)
        if slot is None:
            return
        async with slot.lock:
            if slot.worker is not dead:
                return  # a reload replaced it meanwhile
            assert dead.ready_at is not None
            if asyncio.get_running_loop().time() - dead.ready_at >= STABLE_AFTER:
                slot.failures = 0
            while not self._stopping.is_set():
                delay = 0.0 if slot.failures == 0 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.failures - 1))
                slot.failures += 1
                log.warning("workers.restart index=%d delay=%gs failures=%d", dead.index, delay, slot.failures)
                if delay:
                    await asyncio.sleep(delay)  # the backoff itself: a crash loop must not spin
                worker = await self._start(dead.index)
                if worker.ready_at is not None:
                    slot.worker = worker
                    return

    def _on_sighup(self) -> None:
        if not self._started or (self._reloading is not None and not self._reloading.done()):
            self._reload_again = True  # once more when this one is done, with the newest file
            return
        self._reloading = self._background(self._reload())

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            log.info("workers.reload signal=SIGHUP")
            try:
                settings = self._load()
            except ConfigError as exc:
                log.error("workers.reload_refused error=%s: the running workers keep serving", exc)
            else:
                self._settings = settings
                configure_logging(settings.logging.level, settings.logging.format)
                if await self._replace_all():
                    pids = ",".join(str(s.worker.proc.pid) for s in self._slots.values() if s.worker)
                    log.info("workers.reloaded pids=%s", pids)
            if not self._reload_again:
                return

    async def _replace_all(self) -> bool:
        """Replace every worker, one at a time: the new one listens before the old one drains."""
        count = self._settings.server.workers
        for index in sorted(set(self._slots) | set(range(count))):
            slot = self._slots.setdefault(index, _Slot())
            async with slot.lock:
                old = slot.worker
                if index >= count:  # fewer workers now
                    del self._slots[index]
                    if old is not None:
                        await self._retire(old)
                    continue
                new = await self._start(index)
                if new.ready_at is None:
                    log.error("workers.reload_failed index=%d: the running workers keep serving", index)
                    if old is None:
                        del self._slots[index]
                    return False
                slot.worker, slot.failures = new, 0
                if old is not None:
                    await self._retire(old)
                    log.info("workers.replaced index=%d old=%d new=%d", index, old.proc.pid, new.proc.pid)
        return True

    async def _retire(self, worker: _Process) -> None:
        """SIGTERM `worker` and wait for it to drain; SIGKILL it past the deadline."""
        worker.retired = True
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._drain_deadline()):
                await worker.proc.wait()
        except TimeoutError:
            log.warning(
                "workers.killed index=%d pid=%d after=%gs", worker.index, worker.proc.pid, self._drain_deadline()
            )
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await worker.proc.wait()

    async def _drain(self) -> None:
        """Stop restarts and reloads, SIGTERM every worker, SIGKILL those still there past the deadline."""
        pending = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        live = list(self._live)
        for worker in live:
            worker.retired = True
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        killed = 0
        if live:
            _, late = await asyncio.wait(
                [asyncio.ensure_future(w.proc.wait()) for w in live], timeout=self._drain_deadline()
            )
            for worker in live:
                if worker.proc.returncode is None:
                    killed += 1
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
                    await worker.proc.wait()
            for task in late:
                await task
        for worker in live:
            worker.link.close()
        log.info("workers.stopped workers=%d killed=%d", len(live), killed)
