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


async def test_run_answers_a_coroutine_that_never_waits_without_any_limit() -> None:
    deadlines = Deadlines(resolution=0.02)

    async def from_memory(n: int) -> int:
        return n * 2

    assert await deadlines.run(from_memory(21), 0.05) == 42
    assert not deadlines._active and deadlines._sweeper is None  # no limit, no sweeper
    await deadlines.close()


async def test_run_limits_a_coroutine_once_it_waits() -> None:
    deadlines = Deadlines(resolution=0.02)
    cleaned_up = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    with pytest.raises(TimeoutError):
        await deadlines.run(stuck(), 0.05)
    assert cleaned_up.is_set()  # the cancellation reached the await inside the coroutine
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await deadlines.close()


async def test_run_passes_results_values_and_errors_through_several_waits() -> None:
    deadlines = Deadlines(resolution=0.02)
    loop = asyncio.get_running_loop()

    async def chatty() -> str:
        await asyncio.sleep(0)  # a bare yield
        future = loop.create_future()
        loop.call_soon(future.set_result, "from a future")
        return await future

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bot bug")

    assert await deadlines.run(chatty(), 5) == "from a future"
    with pytest.raises(ValueError, match="bot bug"):
        await deadlines.run(failing(), 5)
    assert not deadlines._active
    await deadlines.close()


async def test_an_outside_cancel_at_expiry_is_not_swallowed() -> None:
    deadlines = Deadlines(resolution=0.01)
    expired = asyncio.Event()

    async def slow() -> None:
        await asyncio.Event().wait()

    async def guarded() -> None:
        await deadlines.run(slow(), 0.02)

    task = asyncio.create_task(guarded())
    original_cancel = task.cancel

    def cancel_and_note(msg: object = None) -> bool:
        expired.set()  # the sweeper's cancel: the limit expired
        return original_cancel(msg)

    task.cancel = cancel_and_note  # type: ignore[method-assign]
    await expired.wait()
    original_cancel()  # someone else cancels in the same instant
    with pytest.raises(asyncio.CancelledError):
        await task
    await deadlines.close()
