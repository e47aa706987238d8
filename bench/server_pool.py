"""N `python -m chatbot_server` processes on one private redis-server, kept at N while they are killed.

For the kill soaks (bench/stream_kill_soak.py): `kill()` SIGKILLs a process and starts its
replacement in the background, so the client carries on with another process while Python starts
(about a second). The processes are `tests.test_redis_multiprocess.Server`, the ones CI starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import stop_process  # noqa: E402
from tests.redis_server import unique_prefix  # noqa: E402
from tests.test_redis_multiprocess import Server  # noqa: E402


class ServerPool:
    """`size` server processes sharing one Redis URL and key prefix; `ready` are those answering /healthz."""

    def __init__(self, workdir: Path, redis_url: str, size: int, *, bot: str, extra: str) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.size = size
        self.bot = bot
        self.extra = extra
        self.prefix = unique_prefix()
        self.ready: list[Server] = []
        self.all: list[Server] = []  # every process started, for their logs
        self._names = (f"s{n}" for n in itertools.count())
        self._starting: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._failed: list[BaseException] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start `size` processes and wait until every one answers."""
        self._session = aiohttp.ClientSession()
        for _ in range(self.size):
            self._start_one()
        while len(self.ready) < self.size:
            await self._wait_change()

    def _start_one(self) -> None:
        task = asyncio.create_task(self._spawn())
        self._starting.add(task)
        task.add_done_callback(self._started)

    async def _spawn(self) -> None:
        name = next(self._names)
        # Popen forks a large process: off the loop, which is timing the client's frames.
        server = await asyncio.to_thread(
            Server, self.workdir, name, self.redis_url, self.prefix, bot=self.bot, extra=self.extra
        )
        self.all.append(server)
        assert self._session is not None
        await server.wait_ready(self._session)
        self.ready.append(server)

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failed.append(task.exception())  # type: ignore[arg-type]
        self._changed.set()

    async def _wait_change(self) -> None:
        if self._failed:
            raise RuntimeError("a server process did not start") from self._failed[0]
        await self._changed.wait()
        self._changed.clear()

    async def pick(self, avoid: Server | None = None, *, choose: int = 0) -> Server:
        """A ready process other than `avoid` (the `choose`-th of them, modulo), waiting for one if need be."""
        while True:
            others = [s for s in self.ready if s is not avoid and s.proc.poll() is None]
            if others:
                return others[choose % len(others)]
            await self._wait_change()

    async def kill(self, server: Server) -> None:
        """SIGKILL `server` and start its replacement in the background."""
        if server in self.ready:
            self.ready.remove(server)
        server.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.proc.wait, 10)
        self._start_one()

    def logs(self) -> list[Path]:
        return [server.log for server in self.all]

    async def close(self) -> None:
        for task in list(self._starting):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(*(asyncio.to_thread(stop_process, s.proc, 5) for s in self.all))
        if self._session is not None:
            await self._session.close()
