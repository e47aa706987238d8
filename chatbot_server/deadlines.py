"""Time limits for many concurrent calls with one timer, instead of one asyncio.timeout each.

`asyncio.timeout` costs a timer in the loop's heap per call (about 4 µs, more as the heap grows); a
bot turn on every message made it one of the hot path's biggest costs. Here one sweeper task,
running only while limits are active, cancels overdue tasks every `resolution` seconds, and the
context manager turns that cancellation into TimeoutError exactly like asyncio.timeout.

The hot path never calls asyncio.get_running_loop() (or current_task() without a loop): on Python
3.11 each call is a getpid() system call.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class _Limit:
    __slots__ = ("cancelling", "deadlines", "expired", "task", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self.deadlines = deadlines
        self.when = when
        self.expired = False
        self.task: asyncio.Task[object] | None = None
        self.cancelling = 0

    async def __aenter__(self) -> _Limit:
        self.task = task = self.deadlines._current_task()
        self.cancelling = task.cancelling()
        self.deadlines._start(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deadlines._active.discard(self)
        # As asyncio.timeout: our cancellation becomes TimeoutError, unless someone else cancelled
        # the task too (then their CancelledError goes on).
        if self.expired and self.task is not None:
            if self.task.uncancel() <= self.cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from exc


class Deadlines:
    """Hands out time limits; cancel() on stop."""

    def __init__(self, *, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self._active: set[_Limit] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def limit(self, seconds: float) -> _Limit:
        """`async with deadlines.limit(5):` raises TimeoutError if the block runs longer (± resolution)."""
        return _Limit(self, time.monotonic() + seconds)

    async def run(self, coro: Coroutine[Any, Any, T], seconds: float, started: float | None = None) -> T:
        """Await `coro` within `seconds`, like `async with self.limit(seconds): await coro`.

        A coroutine that finishes without ever suspending (a CPU-bound bot answering from memory)
        could not be timed out anyway, so it costs no limit at all: its first step runs here, and
        only if it suspends does the rest run under a limit counted from `started` (time.monotonic(),
        default now).
        """
        if started is None:
            started = time.monotonic()
        finished, result = first_step(coro)
        if finished:
            return result  # type: ignore[no-any-return]
        return await self.finish(coro, result, seconds, started)

    async def finish(self, coro: Coroutine[Any, Any, T], suspended_on: Any, seconds: float, started: float) -> T:
        """The rest of `run()` for a coroutine whose first_step() suspended on `suspended_on`."""
        async with _Limit(self, started + seconds):
            return await resume(coro, suspended_on)

    def _current_task(self) -> asyncio.Task[object]:
        task = None if self._loop is None else asyncio.current_task(self._loop)
        if task is None:  # first use, or a new loop (tests): look the loop up once
            self._loop = asyncio.get_running_loop()
            task = asyncio.current_task(self._loop)
            if task is None:
                raise RuntimeError("a deadline needs a running task")
        return task

    def _start(self, limit: _Limit) -> None:
        self._active.add(limit)
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        try:
            while self._active:
                await asyncio.sleep(self.resolution)
                now = time.monotonic()
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


def first_step(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run a coroutine up to its first suspension: (True, its result) if it finished, else (False,
    what it waits on; pass that to Deadlines.finish()). Its exceptions propagate.

    What `Deadlines.run()` does first, for a caller that wants no coroutine of its own in between
    (the bot turn on every message).
    """
    try:
        suspended_on = coro.send(None)
    except StopIteration as done:
        return True, done.value
    # asyncio's protocol: a Task that gets a future from `await` marks it taken (the flag Future's
    # __await__ set). Until resume() hands it to a Task, others may await the same future (aiohttp's
    # sends on one socket share one), and awaiting a future still marked raises RuntimeError.
    if getattr(suspended_on, "_asyncio_future_blocking", False):
        suspended_on._asyncio_future_blocking = False
    return False, suspended_on


@types.coroutine
def resume(coro: Coroutine[Any, Any, T], suspended_on: Any) -> Generator[Any, Any, T]:
    """Drive a coroutine whose first_step() suspended on `suspended_on`, exactly as `await coro`
    would have (PEP 380): `await resume(coro, suspended_on)`, in any task."""
    if getattr(suspended_on, "_asyncio_future_blocking", None) is False:
        suspended_on._asyncio_future_blocking = True  # as `await` left it, for the Task to take
    while True:
        try:
            sent = yield suspended_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation (the deadline) goes in at the point it waits
            try:
                suspended_on = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                suspended_on = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
