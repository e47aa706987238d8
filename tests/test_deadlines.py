"""One-timer deadlines behave like asyncio.timeout."""

from __future__ import annotations

import asyncio

import pytest

from chatbot_server.deadlines import Deadlines


async def test_overdue_block_raises_timeout_and_leaves_the_task_uncancelled() -> None:
    deadlines = Deadlines(resolution=0.02)
    with pytest.raises(TimeoutError):
        async with deadlines.limit(0.05):
            await asyncio.Event().wait()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task carries on normally
    await deadlines.close()


async def test_fast_block_is_untouched_and_many_limits_share_one_sweeper() -> None:
    deadlines = Deadlines(resolution=0.02)

    async def quick(n: int) -> int:
        async with deadlines.limit(5):
            await asyncio.sleep(0)
            return n

    assert await asyncio.gather(*(quick(n) for n in range(100))) == list(range(100))
    await deadlines.close()


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    deadlines = Deadlines(resolution=0.02)
    started = asyncio.Event()

    async def victim() -> None:
        async with deadlines.limit(5):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(victim())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await deadlines.close()
