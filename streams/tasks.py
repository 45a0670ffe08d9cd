"""Stopping background tasks: one way for every part that runs a loop in an asyncio task.

Contract of :func:`cancel_and_wait`: the task is cancelled and awaited until it has ended. Its
own end (cancelled, returned, or failed with an exception, which is logged) never raises in the
caller, but a cancellation of the caller itself still does: the usual
``with suppress(CancelledError): await task`` would swallow it and keep a stopping service
waiting on a caller that was told to stop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended (see the module doc)."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})  # returns when the task ended; raises only if we are cancelled
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task %s had failed: %s: %s", task.get_name(), type(exc).__name__, exc)
