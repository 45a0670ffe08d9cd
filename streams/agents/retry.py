"""Retry an agent's effect until it succeeds: a batch is never acked unprocessed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


async def until_done(what: str, effect: Callable[[], Awaitable[T]], max_delay: float = 30) -> T:
    """Await ``effect()`` until it returns, backing off on any error (logged with ``what``)."""
    delay = 0.5
    while True:
        try:
            return await effect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is retried: acking would lose the batch
            log.error("%s failed: %s; retrying in %.1fs", what, exc, delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
