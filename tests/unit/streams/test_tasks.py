"""Stopping a background task: it ends, its own end never raises in the caller, and a
cancellation of the caller is not swallowed."""

from __future__ import annotations

import asyncio

import pytest

from streams.tasks import cancel_and_wait


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _fails() -> None:
    raise RuntimeError("the loop broke")


async def test_a_running_task_is_cancelled_and_awaited() -> None:
    task = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)  # nothing started: nothing to do


async def test_a_task_that_had_failed_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = asyncio.create_task(_fails(), name="relay")
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "task relay had failed: RuntimeError: the loop broke" in caplog.text


async def test_a_cancelled_caller_stays_cancelled() -> None:
    """The task shrugs off its cancellation for a while; the caller, cancelled meanwhile,
    must see its own CancelledError instead of carrying on as if the stop had finished."""

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # a slow clean-up

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait({task})
