"""Connector health across workers: each worker reports the status of the connectors it runs to
the database, so the API of any worker shows every connector's health.

With several workers (see :mod:`streams.ownership`), a connector polls on exactly one of them,
and only that one knows how its polls go. Contract:

* :class:`HealthReporter` upserts one ``connector_health`` row per connector this worker runs,
  every ``interval`` seconds, all in one statement: its :class:`~streams.runner.ConnectorStatus`,
  ``worker`` (this process: host:pid:random) and ``reported_at``. A failed write is logged and
  tried again at the next interval; reporting never stops a connector.
* A connector that moves (its worker died, or a rebalance) is reported by its new owner within
  ``interval`` seconds of starting there. Until then, and for a connector no live worker runs,
  the row keeps its last ``reported_at``: a report older than a few intervals means no live
  worker has reported the connector since.
* :func:`read_reports` returns the rows of one tenant's named connectors (the caller scopes
  the tenant).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.db import metadata, upsert, utc
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

connector_health = Table(
    "connector_health",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("connector", String(64), primary_key=True),
    Column("worker", String(80), nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_success", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("last_error_kind", String(32)),
    Column("consecutive_failures", Integer, nullable=False),
    Column("announced_total", BigInteger, nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)

#: Seconds between two reports of one worker.
REPORT_SECONDS = 5.0

Statuses = Callable[[], Iterable[tuple[str, str, dict[str, Any]]]]
"""Returns ``(tenant, connector name, ConnectorStatus fields)`` of every connector this worker
runs right now (datetimes as datetimes)."""


class HealthReporter:
    """Reports this worker's connectors every ``interval`` seconds (see the module doc)."""

    def __init__(
        self,
        engine: AsyncEngine,
        statuses: Statuses,
        worker: str,
        *,
        interval: float = REPORT_SECONDS,
    ) -> None:
        self.engine = engine
        self.statuses = statuses
        self.worker = worker
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Report now, then every ``interval`` seconds."""
        self._task = asyncio.create_task(self._loop(), name="connector-health")

    async def stop(self) -> None:
        """Stop reporting (the rows stay: the connectors' next owners overwrite them)."""
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.report_once()
            except SQLAlchemyError as exc:
                log.warning("connector health: reporting failed: %s; trying again", exc)
            await asyncio.sleep(self.interval)

    async def report_once(self) -> int:
        """Upsert the rows of every connector this worker runs; return how many."""
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "tenant": tenant,
                "connector": name,
                "worker": self.worker,
                "state": status["state"],
                "last_success": status["last_success"],
                "last_error": status["last_error"],
                "last_error_kind": status["last_error_kind"],
                "consecutive_failures": status["consecutive_failures"],
                "announced_total": status["announced_total"],
                "reported_at": now,
            }
            for tenant, name, status in self.statuses()
        ]
        if rows:
            stmt = upsert(self.engine, connector_health, ["tenant", "connector"], list(rows[0]))
            async with self.engine.begin() as conn:
                await conn.execute(stmt, rows)
        return len(rows)


async def read_reports(
    engine: AsyncEngine, tenant: str, names: list[str]
) -> dict[str, dict[str, Any]]:
    """The last report of each of ``tenant``'s connectors ``names`` that has one, by name."""
    if not names:
        return {}
    t = connector_health.c
    stmt = select(connector_health).where(t.tenant == tenant, t.connector.in_(names))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    reports = {}
    for row in rows:
        report = dict(row)
        if report["last_success"] is not None:
            report["last_success"] = utc(report["last_success"])
        report["reported_at"] = utc(report["reported_at"])
        reports[str(row["connector"])] = report
    return reports
