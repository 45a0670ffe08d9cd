"""Runs jobs when they fall due, exactly once across restarts and workers.

Every ``scheduler.tick_seconds`` (by the service's :class:`~streams.clock.Clock`) a tick:

1. fails runs whose worker stopped renewing their lease (killed mid-run): ``handler_failed``
   with a message saying so, never silently left "processing";
2. for each enabled job, takes its newest occurrence at or before now (:func:`streams.schedule.
   latest`) that is not before the job was armed (created or last enabled) and claims it
   (:func:`streams.control.executions.claim`: a unique row). The worker whose insert wins runs
   it; every other worker, and this one after a restart, finds it claimed. So a run missed
   while no worker was up (down at 02:30) runs once when one starts, and a job down for a week
   runs once, not seven times;
3. completes import runs whose files have all been judged (counts, status; see
   :func:`import_status`);
4. once a day at ``scheduler.system_time`` (UTC), claims each tenant's system run
   (``sys_retention``: originals past their connector's retention are purged or archived) and
   deletes expired report files.

A data_import run asks the connector runner to announce every complete file now
(:meth:`~streams.runner.ConnectorRunner.run_import`), links those file versions to the run and
waits, leaseless, for their verdicts; a data_export run is handed to the exporter (build the
report, store it, deliver it). ``trigger`` claims a run scheduled for the moment it is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.errors import ConnectorError
from streams.clock import Clock
from streams.control import executions as runs
from streams.control import jobs
from streams.control.errors import NotFoundError
from streams.control.executions import Counts, Delivery, RunFile
from streams.ownership import ConnectorMoved, Placement, worker_name
from streams.schedule import latest
from streams.settings import Settings
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SYSTEM_RETENTION = "sys_retention"
_CASES_GRACE = dt.timedelta(seconds=60)
"""How long an import run waits, after its last file's verdict, for rows to become cases."""


@dataclass
class RunResult:
    """How a run ended (what an exporter or a system job returns)."""

    status: str
    counts: Counts = field(default_factory=Counts)
    deliveries: list[Delivery] = field(default_factory=list)
    error: str | None = None


class Importer(Protocol):
    """What an import run needs of the connector runner."""

    async def run_import(self, tenant: str, connector_id: str) -> list[tuple[str, str, str]]: ...

    async def placement(self, tenant: str, connector_id: str) -> Placement: ...


Exporter = Callable[[Any, str, dt.datetime], Awaitable[RunResult]]
"""``(job row, execution id, scheduled_for) -> RunResult``: builds, stores, delivers."""

SystemJob = Callable[[str, str, dt.datetime], Awaitable[RunResult]]
"""``(tenant, execution id, now) -> RunResult``: the tenant's daily system run."""

Notify = Callable[..., Awaitable[object]]
"""Called with keyword arguments (tenant, subject_key, file, job_id, execution_id, status,
error) when a run fails."""


def import_status(files: list[RunFile], counts: Counts) -> tuple[str, str | None]:
    """The status and error of an import run whose files are all judged.

    ``success``: every file processed with every row accepted (or no file at all);
    ``handler_failed``: files came but not one row was accepted (every file rejected);
    ``partial_success``: in between (some files or rows rejected), naming what was rejected.
    """
    bad = [f for f in files if f.outcome in ("invalid", "partial")]
    if not bad and counts.rows_rejected == 0:
        return "success", None
    named = ", ".join(f"{f.path} ({f.outcome}: {f.reason or 'rows rejected'})" for f in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if counts.rows_accepted == 0 and all(f.outcome == "invalid" for f in files):
        return "handler_failed", f"every file was rejected: {named}{more}"
    rejected = f"{counts.rows_rejected} row(s) rejected"
    return "partial_success", f"{rejected}; files with rejections: {named}{more}"


class Scheduler:
    """Claims and runs due jobs (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        clock: Clock,
        *,
        importer: Importer | None,
        exporter: Exporter | None = None,
        system_job: SystemJob | None = None,
        system_tenants: Callable[[], Awaitable[list[str]]] | None = None,
        daily: Callable[[dt.datetime], Awaitable[object]] | None = None,
        notify: Notify | None = None,
        worker: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.importer = importer
        self.exporter = exporter
        self.system_job = system_job
        self.system_tenants = system_tenants
        self.daily = daily
        self.notify = notify
        self.worker = worker or worker_name()
        self._lease = dt.timedelta(seconds=settings.scheduler.lease_seconds)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._claimed: dict[str, dt.datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._last_error = 0.0

    async def start(self) -> None:
        """Run a first tick now (missed runs start at once), then tick in the background."""
        await self._safe_tick()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        """Stop ticking; fail the runs this worker still holds (the service is stopping)."""
        self._stopping.set()
        await cancel_and_wait(self._task)
        held = list(self._running.items())
        for _ident, task in held:
            task.cancel()
        for ident, task in held:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(SQLAlchemyError):
                await self._finish(
                    ident,
                    RunResult(
                        "handler_failed",
                        error="interrupted: the service stopped during the run; "
                        "trigger the job again to re-run it",
                    ),
                )

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.scheduler.tick_seconds)
            if not self._stopping.is_set():
                await self._safe_tick()

    async def _safe_tick(self) -> None:
        try:
            await self.tick()
        except SQLAlchemyError as exc:  # the database is down: retry next tick, say so
            now = asyncio.get_running_loop().time()
            if now - self._last_error >= 60:
                self._last_error = now
                log.error("scheduler: the database is unavailable: %s", exc)
        except Exception:  # a bug must not stop scheduling: log it, tick again
            log.exception("scheduler: tick failed")

    async def tick(self) -> None:
        """One pass (see the module doc)."""
        now = self.clock.now()
        for row in await runs.fail_abandoned(self.engine, now):
            log.error("run %s of job %s was interrupted (lease expired)", row.id, row.job_id)
            await self._notify_failure(
                row.tenant,
                row.job_id,
                row.id,
                "handler_failed",
                "interrupted: the worker running it stopped",
            )
        async with self.engine.connect() as conn:
            due_jobs = await jobs.enabled_rows(conn)
        for row in due_jobs:
            due = latest(jobs.schedule_of(row), now)
            if due is None or due < _aware(row.armed_at) or self._claimed.get(row.id) == due:
                continue
            self._claimed[row.id] = due
            await self._claim_and_start(row, due, "schedule", now)
        await self._take_handed_off(now)
        await self._complete_imports(now)
        await self._system_runs(now)

    async def _take_handed_off(self, now: dt.datetime) -> None:
        """Run the import runs other workers left to the owner of their connector, when the
        connector runs here."""
        if self.importer is None:
            return
        async with self.engine.connect() as conn:
            waiting = await runs.handed_off(conn)
        for row in waiting:
            connector_id = json.loads(row.connectors)[0]
            if await self.importer.placement(row.tenant, connector_id) != "here":
                continue
            if not await runs.take(self.engine, row.id, self.worker, now + self._lease):
                continue
            async with self.engine.connect() as conn:
                try:
                    job = await jobs.row_of(conn, row.tenant, row.job_id)
                except NotFoundError:
                    await self._finish(row.id, RunResult("handler_failed", error="job deleted"))
                    continue
            log.info("run %s of job %s: taken over from the worker that claimed it", row.id, job.id)
            self._start(row.id, self._run_job(row.id, job, _aware(row.scheduled_for)))

    async def trigger(self, tenant: str, job_id: str) -> str:
        """Run one of ``tenant``'s jobs now (whatever its schedule or state); the run's id."""
        now = self.clock.now()
        async with self.engine.connect() as conn:
            row = await jobs.row_of(conn, tenant, job_id)
        ident = await self._claim_and_start(row, now, "manual", now)
        if ident is None:  # the same microsecond twice: practically never
            raise RuntimeError("a run of this job was just triggered; try again")
        return ident

    async def _claim_and_start(
        self, row: Any, scheduled_for: dt.datetime, trigger: str, now: dt.datetime
    ) -> str | None:
        ident = await runs.claim(
            self.engine,
            tenant=row.tenant,
            job_id=row.id,
            job_name=row.name,
            run_type=row.type,
            connectors=json.loads(row.connectors),
            scheduled_for=scheduled_for,
            trigger=trigger,  # type: ignore[arg-type]
            now=now,
            worker=self.worker,
            lease=self._lease,
        )
        if ident is None:
            return None
        log.info(
            "job %s/%s (%s): run %s for %s",
            row.tenant,
            row.name,
            row.id,
            ident,
            scheduled_for.isoformat(),
        )
        self._start(ident, self._run_job(ident, row, scheduled_for))
        return ident

    def _start(self, ident: str, work: Awaitable[None]) -> None:
        async def held() -> None:
            renew = asyncio.create_task(self._renew(ident))
            try:
                await work
            finally:
                renew.cancel()
                self._running.pop(ident, None)

        self._running[ident] = asyncio.create_task(held(), name=f"run-{ident}")

    async def _renew(self, ident: str) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            with contextlib.suppress(SQLAlchemyError):
                await runs.update_run(
                    self.engine, ident, lease_until=self.clock.now() + self._lease
                )

    async def _run_job(self, ident: str, row: Any, scheduled_for: dt.datetime) -> None:
        await runs.update_run(self.engine, ident, status="processing", started_at=self.clock.now())
        try:
            if row.type == "data_import":
                await self._run_import(ident, row)
                return
            if self.exporter is None:
                result = RunResult("handler_failed", error="exports do not run in this process")
            else:
                result = await self.exporter(row, ident, scheduled_for)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a run must end with a status, whatever happened
            log.exception("run %s of job %s failed", ident, row.id)
            result = RunResult("handler_failed", error=f"internal error: {exc!r}")
        await self._finish(ident, result)
        if result.status in ("handler_failed", "delivery_failed"):
            await self._notify_failure(row.tenant, row.id, ident, result.status, result.error or "")

    async def _run_import(self, ident: str, row: Any) -> None:
        connector_id = json.loads(row.connectors)[0]
        importer = self.importer
        try:
            where = (
                "elsewhere"
                if importer is None
                else await importer.placement(row.tenant, connector_id)
            )
            if importer is None or where == "elsewhere":
                # Another worker owns the connector: its scheduler takes the run over.
                await runs.hand_off(self.engine, ident, self.clock.now() + self._lease)
                return
            files = await importer.run_import(row.tenant, connector_id)
        except ConnectorMoved as moved:
            # What was announced here stays this run's; the new owner announces the rest.
            await runs.add_files(self.engine, ident, row.tenant, moved.announced)
            await runs.hand_off(self.engine, ident, self.clock.now() + self._lease)
            log.info("run %s: its connector moved to another worker; handed over", ident)
            return
        except (ConnectorError, RuntimeError) as exc:
            error = f"the source could not be read: {exc}"
            await self._finish(ident, RunResult("handler_failed", error=error))
            await self._notify_failure(row.tenant, row.id, ident, "handler_failed", error)
            return
        await runs.add_files(self.engine, ident, row.tenant, files)
        # Leaseless from here: whichever worker ticks next completes it once files are judged.
        await runs.update_run(self.engine, ident, counts=Counts(files=len(files)), lease_until=None)
        await self._complete_imports(self.clock.now(), only=ident)

    async def _complete_imports(self, now: dt.datetime, only: str | None = None) -> None:
        async with self.engine.connect() as conn:
            waiting = [r for r in await runs.waiting_imports(conn) if only in (None, r.id)]
            judged = []
            for row in waiting:
                files = await runs.run_files(conn, row.tenant, row.id)
                counts = await runs.import_counts(conn, row.tenant, row.id)
                done = all(f.outcome not in ("pending", "incomplete") for f in files)
                if done:
                    # Verdicts and cases carry the machine's time, not the scheduler's clock.
                    wall = dt.datetime.now(dt.UTC)
                    done = await runs.cases_settled(conn, row.tenant, row.id, wall, _CASES_GRACE)
                judged.append((row, files, counts, done))
        for row, files, counts, done in judged:
            if not done:
                await runs.update_run(self.engine, row.id, counts=counts)
                continue
            status, error = import_status(files, counts)
            await runs.update_run(self.engine, row.id, status="delivering", counts=counts)
            await self._finish(row.id, RunResult(status, counts=counts, error=error), now)
            if status == "handler_failed":
                await self._notify_failure(row.tenant, row.job_id, row.id, status, error or "")

    async def _finish(self, ident: str, result: RunResult, now: dt.datetime | None = None) -> None:
        values: dict[str, Any] = {
            "status": result.status,
            "error": result.error,
            "finished_at": now or self.clock.now(),
            "lease_until": None,
        }
        if result.counts != Counts() or result.status != "success":
            values["counts"] = result.counts
        if result.deliveries:
            values["deliveries"] = result.deliveries
        # Never overwrite a run already ended (e.g. failed as interrupted meanwhile).
        async with self.engine.begin() as conn:
            ex = runs.executions.c
            await conn.execute(
                runs.executions.update()
                .where(ex.id == ident, ex.status.notin_(runs.FINAL))
                .values(_stored(values))
            )

    async def _system_runs(self, now: dt.datetime) -> None:
        hh, mm = (int(x) for x in self.settings.scheduler.system_time.split(":"))
        today = dt.datetime.combine(now.date(), dt.time(hh, mm), tzinfo=dt.UTC)
        due = today if today <= now else today - dt.timedelta(days=1)
        if self._claimed.get(SYSTEM_RETENTION) == due:
            return
        self._claimed[SYSTEM_RETENTION] = due
        if self.daily is not None:
            await self.daily(now)
        if self.system_job is None or self.system_tenants is None:
            return
        job = self.system_job
        for tenant in await self.system_tenants():
            ident = await runs.claim(
                self.engine,
                tenant=tenant,
                job_id=SYSTEM_RETENTION,
                job_name="retention of processed originals",
                run_type="retention",
                connectors=[],
                scheduled_for=due,
                trigger="schedule",
                now=now,
                worker=self.worker,
                lease=self._lease,
            )
            if ident is not None:
                self._start(ident, self._run_system(job, tenant, ident))

    async def _run_system(self, job: SystemJob, tenant: str, ident: str) -> None:
        await runs.update_run(self.engine, ident, status="processing", started_at=self.clock.now())
        try:
            result = await job(tenant, ident, self.clock.now())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("system run %s of %s failed", ident, tenant)
            result = RunResult("handler_failed", error=f"internal error: {exc!r}")
        await self._finish(ident, result)

    async def _notify_failure(
        self, tenant: str, job_id: str, execution_id: str, status: str, error: str
    ) -> None:
        if self.notify is None:
            return
        try:
            await self.notify(
                tenant=tenant,
                subject_key=f"job/{job_id}",
                file=None,
                job_id=job_id,
                execution_id=execution_id,
                status=status,
                error=error,
            )
        except Exception:  # a notice that cannot be sent never fails the run
            log.exception("run %s: the failure notice could not be sent", execution_id)

    async def wait_idle(self) -> None:
        """Wait for the runs this worker holds (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if isinstance(out.get("counts"), Counts):
        out["counts"] = out["counts"].model_dump_json()
    if "deliveries" in out:
        out["deliveries"] = json.dumps([d.model_dump() for d in out["deliveries"]])
    return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
