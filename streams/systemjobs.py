"""The scheduler's daily system work: retention of processed originals, expired reports.

:class:`RetentionJob` is the ``sys_retention`` run of one tenant (recorded in its execution
history): every enabled connector of the tenant whose ``retention.action`` is not ``keep`` gets
:func:`~streams.retention.apply_retention` with a store of its own (never the poller's session;
API connectors through the SSRF guard). Status ``success`` when every file was handled,
``partial_success`` when some files or connectors failed and others did not, ``handler_failed``
when nothing could be done; the error names each failure.
"""

from __future__ import annotations

import datetime as dt
import logging

from connectors.errors import ConnectorError
from connectors.registry import open_store
from streams.control.catalog import Catalog, Entry
from streams.control.executions import Counts
from streams.retention import RetentionSummary, apply_retention
from streams.runner import guard_for
from streams.scheduler import RunResult
from streams.settings import Settings

log = logging.getLogger(__name__)


class RetentionJob:
    """Each tenant's daily retention run (see the module doc)."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog

    async def _entries(self) -> list[Entry]:
        desired = await self.catalog.desired()
        return [e for e in desired.values() if e.settings.retention.action != "keep"]

    async def tenants(self) -> list[str]:
        """The tenants with at least one connector whose originals expire."""
        return sorted({e.tenant for e in await self._entries()})

    async def run(self, tenant: str, execution_id: str, now: dt.datetime) -> RunResult:
        """Apply retention to ``tenant``'s connectors; the run's result."""
        counts = Counts()
        errors: list[str] = []
        done = 0
        for entry in await self._entries():
            if entry.tenant != tenant:
                continue
            conn = entry.settings
            store = open_store(conn.store, guard_for(self.settings, entry.from_api))
            try:
                summary = await apply_retention(self.settings, tenant, conn, store, now)
            except ConnectorError as exc:
                errors.append(f"{conn.name}: {exc}")
                summary = RetentionSummary(failed=1)
            counts.files += summary.examined
            counts.files_purged += summary.purged
            counts.files_archived += summary.archived
            done += summary.purged + summary.archived
            errors += [f"{conn.name}: {e}" for e in summary.errors]
        if not errors:
            return RunResult("success", counts=counts)
        status = "partial_success" if done else "handler_failed"
        return RunResult(status, counts=counts, error="; ".join(errors[:20]))
