"""Readiness: a list of named async checks the service registers, run for ``/readyz``.

Contract:

* A check is an async callable taking no argument. It returns a short detail string (shown in
  the body) when the part is ready, and raises :class:`NotReady` (or any exception, or runs
  past the check timeout) when it is not. Checks must never block the event loop: blocking
  client calls run in a thread.
* :meth:`Readiness.evaluate` runs every check concurrently, each bounded by ``timeout``
  seconds, and returns a :class:`Report`: ready only when every check passed. A process with
  no check registered is ready (nothing it depends on).
* ``/readyz`` is unauthenticated, so a detail never carries an exception's own text (a driver's
  error may name hosts, users or SQL): a :class:`NotReady` shows its message, any other
  exception only its type, and its full text goes to the service log.
* Each part registers its own check where it starts (:meth:`Readiness.add`), so a new part
  (a connector-group consumer) adds one line. Names are unique.

The factories below are the checks the service uses: Kafka answers a metadata request, the
database answers ``SELECT 1``, and a Faust app's consumer group has given this process its
assignment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str]]
"""Returns a detail when ready; raises when not."""

DEFAULT_TIMEOUT = 3.0
"""Seconds a check may take (kubelet probes default to a 1 s timeout: set the probe's
``timeoutSeconds`` above this)."""


class NotReady(Exception):
    """A check's part is not ready; the message says why."""


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """Every check's outcome; ``ready`` when all passed."""

    results: tuple[Result, ...]

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return all(r.ok for r in self.results)

    @property
    def failing(self) -> list[str]:
        """Names of the checks that failed."""
        return [r.name for r in self.results if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``/readyz``."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "failing": self.failing,
            "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in self.results},
        }


class Readiness:
    """The named checks of one process (see the module doc)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._checks: dict[str, Check] = {}

    @property
    def names(self) -> list[str]:
        """The registered checks' names, in registration order."""
        return list(self._checks)

    def add(self, name: str, check: Check) -> None:
        """Register ``check`` under ``name`` (unique)."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is registered already")
        self._checks[name] = check

    def remove(self, name: str) -> None:
        """Unregister a check (a part that stopped); unknown names are ignored."""
        self._checks.pop(name, None)

    async def evaluate(self) -> Report:
        """Run every check concurrently (each within ``timeout``) and report."""
        checks = list(self._checks.items())
        results = await asyncio.gather(*(self._run(name, check) for name, check in checks))
        return Report(tuple(results))

    async def _run(self, name: str, check: Check) -> Result:
        try:
            detail = await asyncio.wait_for(check(), self.timeout)
        except TimeoutError:
            return Result(name, False, f"no answer within {self.timeout:g}s")
        except NotReady as exc:
            return Result(name, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the log says why
            log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            return Result(name, False, f"{type(exc).__name__} (the service log has the details)")
        return Result(name, True, detail)


def kafka_check(config: Mapping[str, Any], timeout: float = 2.0) -> Check:
    """Kafka answers a metadata request (one admin client, reused; the call runs in a thread)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict(config))

    def metadata() -> str:
        try:
            meta = admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise NotReady(f"metadata request failed: {exc.args[0] if exc.args else exc}") from exc
        return f"{len(meta.brokers)} broker(s)"

    async def check() -> str:
        return await asyncio.to_thread(metadata)

    return check


def database_check(engine: AsyncEngine) -> Check:
    """The database answers ``SELECT 1``."""

    async def check() -> str:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "SELECT 1 answered"

    return check


def faust_assignment_check(app: Any) -> Check:
    """The Faust app's consumer group has given this process its assignment: at least one
    rebalance has completed and none is in progress.

    A completed assignment may be empty (more workers than partitions): such a worker is a
    ready standby, not a broken one, so its pods still count as available.
    """

    async def check() -> str:
        if getattr(app, "rebalancing_count", 0) == 0:
            raise NotReady("waiting for the first partition assignment")
        if app.rebalancing:
            raise NotReady("the consumer group is rebalancing")
        return f"{len(app.consumer.assignment())} partition(s) assigned"

    return check
