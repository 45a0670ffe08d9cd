"""Expected daily files: a connector's ``expect_file`` setting and the gauge that watches it.

Contract:

* ``expect_file: {by: "HH:MM", timezone: "<IANA zone>"}`` on a connector means a new file
  version should be announced every local day before ``by``.
* :func:`missing` is the rule: on the local date of ``now`` (in the zone), once ``by`` has
  passed, the file is missing when no version of the connector was announced since that date's
  local midnight. Before ``by`` nothing is missing yet. Daylight saving: a local time that does
  not exist that day is taken with the offset before the jump, as :mod:`streams.schedule` does.
* :class:`ExpectedFileMonitor` sets ``callstream_connector_expected_file_missing{tenant,
  connector}`` to 1 or 0 for the connectors *this process runs* (the runner's contexts) that
  have ``expect_file``, as often as they poll (at least every 30 s, at most every second), and
  drops the series of connectors it no longer runs, so exactly one worker exports each.
  The last announcement comes from the durable connector state (``connector_files``), so a
  restart or a connector moving to another worker keeps the answer. When the database cannot
  be read, the previous values stay and the failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.clock import Clock, known_zone
from streams.db import utc
from streams.metrics import Metrics
from streams.state import connector_files
from streams.tasks import cancel_and_wait

if TYPE_CHECKING:
    from streams.runner import ConnectorRunner

log = logging.getLogger(__name__)

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MIN_INTERVAL, _MAX_INTERVAL = 1.0, 30.0
_REPORT_EVERY = 60.0  # seconds between two log lines about an unreadable database


class ExpectFile(BaseModel):
    """A file is expected every local day by ``by`` in ``timezone``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: str = Field(
        description="Local time (HH:MM, 24-hour) by which the day's file should be announced.",
        examples=["07:00"],
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of ``by`` and of the day.", examples=["Europe/London"]
    )

    @field_validator("by")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be a 24-hour local time HH:MM, e.g. 07:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value)

    @property
    def time(self) -> dt.time:
        """``by`` as a time of day."""
        hours, minutes = self.by.split(":")
        return dt.time(int(hours), int(minutes))


def missing(expect: ExpectFile, last_announced: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether today's expected file is missing at ``now`` (see the module doc); datetimes are
    aware (naive ones are taken as UTC)."""
    zone = ZoneInfo(expect.timezone)
    today = utc(now).astimezone(zone).date()
    midnight = dt.datetime.combine(today, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
    deadline = dt.datetime.combine(today, expect.time, tzinfo=zone).astimezone(dt.UTC)
    if utc(now) < deadline:
        return False
    return last_announced is None or utc(last_announced) < midnight


async def last_announced(
    engine: AsyncEngine, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dt.datetime]:
    """The newest announcement time of each (tenant, connector) that has one."""
    wanted = set(keys)
    if not wanted:
        return {}
    t = connector_files.c
    stmt = (
        select(t.tenant, t.connector, func.max(t.announced_at))
        .where(
            t.tenant.in_(sorted({k[0] for k in wanted})),
            t.connector.in_(sorted({k[1] for k in wanted})),
        )
        .group_by(t.tenant, t.connector)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {(r[0], r[1]): utc(r[2]) for r in rows if (r[0], r[1]) in wanted and r[2] is not None}


class ExpectedFileMonitor:
    """Keeps ``callstream_connector_expected_file_missing`` current (see the module doc)."""

    def __init__(
        self,
        runner: ConnectorRunner,
        engine: AsyncEngine,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._runner = runner
        self._engine = engine
        self._metrics = metrics
        self._clock = clock
        self._exported: set[tuple[str, str]] = set()
        self._reported = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching."""
        self._task = asyncio.create_task(self._loop(), name="expected-files")

    async def stop(self) -> None:
        """Stop watching."""
        await cancel_and_wait(self._task)

    def _expecting(self) -> dict[tuple[str, str], Any]:
        """This process's running connectors that expect a file, with their settings."""
        contexts: Mapping[tuple[str, str], Any] = self._runner.contexts
        return {
            (ctx.tenant, ctx.name): ctx.settings
            for ctx in list(contexts.values())
            if ctx.settings.expect_file is not None
        }

    async def update(self) -> dict[tuple[str, str], bool]:
        """Evaluate every expecting connector now, set the gauge; return what it set."""
        expecting = self._expecting()
        last = await last_announced(self._engine, expecting)
        now = self._clock.now()
        gauge = self._metrics.expected_file_missing
        out: dict[tuple[str, str], bool] = {}
        for key, conn in expecting.items():
            out[key] = missing(conn.expect_file, last.get(key), now)
            gauge.labels(tenant=key[0], connector=key[1]).set(1 if out[key] else 0)
        for gone in self._exported - set(expecting):
            with contextlib.suppress(KeyError):
                gauge.remove(*gone)
        self._exported = set(expecting)
        return out

    def _interval(self) -> float:
        polls = [c.poll.interval_seconds for c in self._expecting().values()]
        return min(_MAX_INTERVAL, max(_MIN_INTERVAL, min(polls, default=_MAX_INTERVAL)))

    async def _loop(self) -> None:
        while True:
            try:
                await self.update()
            except (SQLAlchemyError, OSError) as exc:  # database down: keep the last values
                if time.monotonic() - self._reported >= _REPORT_EVERY:
                    self._reported = time.monotonic()
                    log.error("expected files: reading the connector state failed: %s", exc)
            await asyncio.sleep(self._interval())
