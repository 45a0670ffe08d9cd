"""Jobs on an injectable clock, through the running service (real Kafka and PostgreSQL).

A daily 02:30 Asia/Kolkata import job: files wait for the run, the run happens once per day
with a second worker ticking on the same database and across restarts, a run missed while the
service was down happens once at start, trigger-now runs at once, a disabled job does not run,
the end date stops it. Weekly and monthly jobs fire on the right dates across a DST change.
A run whose connector moves to another worker mid-way keeps what it announced and is finished
by the connector's new owner.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

from api_support import OPERATOR_TOKEN, ApiClient, tenant_key
from servers.postgres import PostgresServer
from support import FAST_POLL, conversations_csv, running, settings_for, unique_prefix

from streams.clock import ManualClock
from streams.ownership import ConnectorMoved, Placement
from streams.runner import ConnectorRunner
from streams.scheduler import Scheduler
from streams.service import Service
from streams.settings import ConnectorSettings, Settings

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def job_settings(kafka: str, tmp: Path, url: str, inbox: Path) -> Settings:
    conn = ConnectorSettings(name="drop", store={"type": "local", "root": inbox}, poll=FAST_POLL)
    return settings_for(
        kafka,
        unique_prefix(),
        tmp / "data",
        [conn],
        database_url=url,
        api={"operator_token": OPERATOR_TOKEN},
        scheduler={"tick_seconds": 0.2},
        runner={"reconcile_interval_seconds": 0.2},
    )


def fresh(
    kafka: str, pg_server: PostgresServer, tmp_path: Path, now: str
) -> tuple[Settings, Path, ManualClock]:
    """An emptied database, an empty inbox, the job service's settings and a clock at ``now``."""
    pg_server.reset()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return job_settings(kafka, tmp_path, pg_server.async_url(), inbox), inbox, ManualClock(at(now))


async def runs_of(client: ApiClient, job_id: str) -> list[dict[str, Any]]:
    reply = await client.get("/v1/executions", params={"job_id": job_id})
    assert reply.status == 200, reply.text
    return list(reply.body["items"])


async def settle(client: ApiClient, job_id: str, count: int, timeout: float = 60) -> list[Any]:
    """Wait until the job has ``count`` runs, all finished; return them (newest first)."""
    deadline = time.monotonic() + timeout
    while True:
        items = await runs_of(client, job_id)
        final = [r for r in items if r["status"] not in ("pending", "processing", "delivering")]
        if len(items) == count and len(final) == count:
            return items
        assert len(items) <= count, items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.2)


async def quiet(seconds: float = 1.0) -> None:
    """Let several scheduler ticks pass."""
    await asyncio.sleep(seconds)


async def driven_by_job(service: Service, timeout: float = 30) -> None:
    """Wait until the runner has seen that a job drives ``acme/drop`` (its polls then announce
    nothing): a fixed sleep is not enough on a loaded machine."""
    assert service.runner is not None
    deadline = time.monotonic() + timeout
    while not ((ctx := service.runner.contexts.get(("acme", "drop"))) and ctx.scheduled):
        assert time.monotonic() < deadline, "the runner never saw the job"
        await asyncio.sleep(0.05)


async def test_a_daily_0230_kolkata_import_runs_once_a_day(
    kafka: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    settings, inbox, clock = fresh(
        kafka, pg_server, tmp_path, "2026-11-20T12:00:00+00:00"
    )  # 17:30 in Kolkata
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        key = await tenant_key(client, "acme")
        me = client.as_(key)
        created = await me.post(
            "/v1/jobs",
            {
                "name": "nightly import",
                "type": "data_import",
                "connectors": ["cfg_drop"],
                "frequency": "daily",
                "time": "02:30",
                "timezone": "Asia/Kolkata",
                "end_date": "2026-11-22",
            },
        )
        assert created.status == 201, created.text
        job = created.body
        assert job["next_run_at"] == "2026-11-20T21:00:00Z"  # 02:30 IST on the 21st
        await driven_by_job(service)
        (inbox / "day1.csv").write_bytes(conversations_csv(3))
        await quiet(1.5)
        files = await me.get("/v1/files")
        assert files.body["items"] == [], "a job drives the connector: nothing before its run"
        assert await runs_of(me, job["id"]) == []

        clock.set(at("2026-11-20T21:00:30+00:00"))
        first = await settle(me, job["id"], 1)
        assert first[0]["status"] == "success", first
        assert first[0]["trigger"] == "schedule"
        assert first[0]["scheduled_for"] == "2026-11-20T21:00:00Z"
        counts = first[0]["counts"]
        assert (counts["files"], counts["rows_accepted"], counts["cases_opened"]) == (1, 3, 3)
        detail = await me.get(f"/v1/executions/{first[0]['id']}")
        assert [(f["path"], f["outcome"]) for f in detail.body["files"]] == [
            ("day1.csv", "processed")
        ]

        # A second worker on the same database, at the same time: it finds the run claimed.
        second = Scheduler(settings, service.api.engine, clock, importer=service.runner)
        await second.start()
        await quiet()
        await second.stop()
        assert len(await runs_of(me, job["id"])) == 1

    # Restart the same day: nothing runs again.
    clock.set(at("2026-11-21T03:00:00+00:00"))
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        me = client.as_(key)
        await quiet()
        assert len(await runs_of(me, job["id"])) == 1
        (inbox / "day2.csv").write_bytes(conversations_csv(2, start=100))

    # Down at 02:30 on the 22nd (21:00 UTC on the 21st): that run happens once at start.
    clock.set(at("2026-11-22T05:00:00+00:00"))
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        me = client.as_(key)
        runs = await settle(me, job["id"], 2)
        assert runs[0]["scheduled_for"] == "2026-11-21T21:00:00Z"
        assert runs[0]["counts"]["files"] == 1 and runs[0]["counts"]["rows_accepted"] == 2
        await quiet()
        assert len(await runs_of(me, job["id"])) == 2

        # Trigger now: at once, whatever the schedule.
        triggered = await me.post(f"/v1/jobs/{job['id']}/trigger")
        assert triggered.status == 202, triggered.text
        assert triggered.body["trigger"] == "manual"
        runs = await settle(me, job["id"], 3)
        assert runs[0]["counts"]["files"] == 0 and runs[0]["status"] == "success"

        # The end date (the 22nd) stops it: 02:30 on the 23rd does not run.
        clock.set(at("2026-11-22T21:00:05+00:00"))
        await quiet()
        assert len(await runs_of(me, job["id"])) == 3
        listed = await me.get(f"/v1/jobs/{job['id']}")
        assert listed.body["next_run_at"] is None
        assert listed.body["last_run"]["execution_id"] == runs[0]["id"]


class MovesMidRun:
    """The importer of a worker whose connector moves to another worker during a run: the
    run's first batches are announced (by the real runner), then the connector is gone."""

    def __init__(self, runner: ConnectorRunner) -> None:
        self.runner = runner
        self.announced: list[tuple[str, str, str]] = []
        self.moved = False

    async def placement(self, tenant: str, connector_id: str) -> Placement:
        # Once moved, the connector is another worker's: this one must not take the run back.
        return "elsewhere" if self.moved else "here"

    async def run_import(self, tenant: str, connector_id: str) -> list[tuple[str, str, str]]:
        self.announced = await self.runner.run_import(tenant, connector_id)
        self.moved = True
        raise ConnectorMoved(self.announced)


async def test_a_run_whose_connector_moves_mid_way_is_finished_by_the_new_owner(
    kafka: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    settings, inbox, clock = fresh(kafka, pg_server, tmp_path, "2026-11-20T12:00:00+00:00")
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        me = client.as_(await tenant_key(client, "acme"))
        created = await me.post(
            "/v1/jobs",
            {
                "name": "import",
                "type": "data_import",
                "connectors": ["cfg_drop"],
                "frequency": "daily",
                "time": "02:30",
                "timezone": "UTC",
            },
        )
        assert created.status == 201, created.text
        job = created.body
        await driven_by_job(service)  # from now on the connector's polls announce nothing
        (inbox / "a.csv").write_bytes(conversations_csv(2))
        (inbox / "b.csv").write_bytes(conversations_csv(3, start=10))
        await quiet(1.5)
        assert service.runner is not None
        moving = MovesMidRun(service.runner)
        other = Scheduler(settings, service.api.engine, clock, importer=moving)
        await other.start()
        try:
            await other.trigger("acme", job["id"])  # claimed and started by the other worker
            (run,) = await settle(me, job["id"], 1)
        finally:
            await other.stop()
        assert sorted(path for _fid, _conn, path in moving.announced) == ["a.csv", "b.csv"]
        assert run["status"] == "success", run
        assert (run["counts"]["files"], run["counts"]["rows_accepted"]) == (2, 5), run
        detail = await me.get(f"/v1/executions/{run['id']}")
        assert sorted((f["path"], f["outcome"]) for f in detail.body["files"]) == [
            ("a.csv", "processed"),
            ("b.csv", "processed"),
        ]


async def test_disabled_jobs_do_not_run_and_weekly_monthly_fire_on_their_dates_across_dst(
    kafka: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    settings, _inbox, clock = fresh(kafka, pg_server, tmp_path, "2026-10-14T12:00:00+00:00")
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        me = client.as_(await tenant_key(client, "acme"))
        base = {"type": "data_import", "connectors": ["cfg_drop"], "time": "09:00"}
        weekly = await me.post(
            "/v1/jobs",
            base
            | {
                "name": "w",
                "frequency": "weekly",
                "weekday": "monday",
                "timezone": "Europe/Berlin",
            },
        )
        monthly = await me.post(
            "/v1/jobs",
            base
            | {
                "name": "m",
                "frequency": "monthly",
                "day_of_month": 31,
                "timezone": "America/New_York",
            },
        )
        paused = await me.post(
            "/v1/jobs", base | {"name": "p", "frequency": "daily", "timezone": "UTC"}
        )
        assert {weekly.status, monthly.status, paused.status} == {201}, weekly.text
        off = await me.post(f"/v1/jobs/{paused.body['id']}/disable")
        assert (
            off.status == 200 and off.body["enabled"] is False and off.body["next_run_at"] is None
        )

        # Berlin leaves summer time on 25 Oct, New York on 1 Nov: step day by day to 2 Dec.
        day = at("2026-10-15T00:00:00+00:00")
        while day < at("2026-12-02T00:00:00+00:00"):
            day += dt.timedelta(days=1)
            clock.set(day)
            await asyncio.sleep(0.25)
        await quiet()
        w = [r["scheduled_for"] for r in await runs_of(me, weekly.body["id"])]
        m = [r["scheduled_for"] for r in await runs_of(me, monthly.body["id"])]
        assert sorted(w) == [
            "2026-10-19T07:00:00Z",  # 09:00 CEST
            "2026-10-26T08:00:00Z",  # 09:00 CET, after the change
            "2026-11-02T08:00:00Z",
            "2026-11-09T08:00:00Z",
            "2026-11-16T08:00:00Z",
            "2026-11-23T08:00:00Z",
            "2026-11-30T08:00:00Z",
        ]
        assert sorted(m) == ["2026-10-31T13:00:00Z", "2026-11-30T14:00:00Z"]  # EDT, then EST
        assert await runs_of(me, paused.body["id"]) == []

        # Other tenants see none of it.
        other = await client.as_(OPERATOR_TOKEN).post(
            "/v1/tenants", {"id": "globex", "name": "Globex"}
        )
        assert other.status == 201
        them = client.as_(await tenant_key(client, "globex"))
        assert (await them.get(f"/v1/jobs/{weekly.body['id']}")).status == 404
        assert (await them.post(f"/v1/jobs/{weekly.body['id']}/trigger")).status == 404
        run_id = (await runs_of(me, weekly.body["id"]))[0]["id"]
        assert (await them.get(f"/v1/executions/{run_id}")).status == 404
        assert (await them.get("/v1/executions")).body["items"] == []
        stolen = await them.post(
            "/v1/jobs", base | {"name": "x", "frequency": "daily", "connectors": ["cfg_drop"]}
        )
        assert stolen.status == 404, stolen.text
