"""Time limits for many concurrent calls with one timer, instead of one asyncio.timeout each.

`asyncio.timeout` costs a timer in the loop's heap per call (about 4 µs, more as the heap grows); a
bot turn on every message made it one of the hot path's biggest costs. Here one sweeper task,
running only while limits are active, cancels overdue tasks every `resolution` seconds, and the
context manager turns that cancellation into TimeoutError exactly like asyncio.timeout.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Limit:
    __slots__ = ("deadlines", "expired", "task", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self.deadlines = deadlines
        self.when = when
        self.expired = False
        self.task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> _Limit:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self.task = task
        self.deadlines._start(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.deadlines._active.discard(self)
        if self.expired and self.task is not None:
            self.task.uncancel()
            if kind is asyncio.CancelledError:
                raise TimeoutError from exc
        return False


class Deadlines:
    """Hands out time limits; cancel() on stop."""

    def __init__(self, *, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self._active: set[_Limit] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def limit(self, seconds: float) -> _Limit:
        """`async with deadlines.limit(5):` raises TimeoutError if the block runs longer (± resolution)."""
        return _Limit(self, asyncio.get_running_loop().time() + seconds)

    def _start(self, limit: _Limit) -> None:
        self._active.add(limit)
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._active:
                await asyncio.sleep(self.resolution)
                now = loop.time()
                for limit in [item for item in self._active if item.when <= now and not item.expired]:
                    limit.expired = True
                    if limit.task is not None:
                        limit.task.cancel()
        finally:
            self._sweeper = None

    async def close(self) -> None:
        """Stop the sweeper (limits still active simply never fire)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
