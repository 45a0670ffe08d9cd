"""The console's Jobs & Pipelines and Execution History in a real browser.

The service runs in process against real Kafka, PostgreSQL and an SMTP server (aiosmtpd); 20
analysis results of the report's day are written by the case store and an e-mail export
connector is set up through the API. Through the UI only: a daily CSV export job is created,
run now, followed in the execution history until "Success" and its report downloaded from the
run's signed link; the history is filtered by status; jobs are disabled, enabled and deleted
(after a confirmation page); another tenant's job and run are not found. Every page visit ends
with a screenshot, an axe-core check and no browser console errors.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from api_support import ApiClient
from console_support import PHONE, ConsoleWorld, Tab, console_settings, console_world
from fixtures import mail_settings
from playwright.async_api import expect
from servers.postgres import PostgresServer
from servers.smtp import SmtpServer
from support import conversation_record, seed_results

from streams.clock import ManualClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

UTC = dt.UTC
DAY = dt.datetime(2026, 11, 22, tzinfo=UTC)
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ROWS = 20
COLUMNS = ["case_id", "external_interaction_id", "agent"]


@dataclass
class World(ConsoleWorld):
    mail_connector: str
    smtp: SmtpServer


def _records() -> Iterator[dict[str, Any]]:
    """``ROWS`` conversations of ``DAY`` for acme."""
    for i in range(ROWS):
        yield conversation_record(
            f"CON-{i:03d}",
            channel="chat",
            agent_id=f"agent-{i % 3}",
            started_at=DAY + dt.timedelta(hours=8),
            turns=[{"speaker": "agent", "at": None, "text": "Hello, how can I help?"}],
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    kafka: str,
    pg_server: PostgresServer,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    settings = console_settings(
        kafka,
        pg_server,
        tmp_path_factory.mktemp("console-jobs"),
        mail=mail_settings(smtp_server),
        scheduler={"tick_seconds": 0.2},
    )
    await seed_results(settings, _records(), analysed_at=DAY + dt.timedelta(hours=10))
    async with console_world(settings, ManualClock(NOW)) as c:
        made = await c.api.as_(c.key).post(
            "/v1/export-connectors",
            {"name": "quality-mail", "config": {"type": "email", "to": ["qa@acme.example"]}},
        )
        assert made.status == 201, made.text
        yield World(**vars(c), mail_connector=made.body["id"], smtp=smtp_server)


async def _signed_in(world: World, viewport: dict[str, int] | None = None) -> Tab:
    tab = await world.browser.tab(viewport)
    await tab.sign_in(world.key)
    return tab


async def _api_job(me: ApiClient, name: str, connector: str) -> dict[str, Any]:
    """Set up an export job through the API (for the tests of the row actions)."""
    made = await me.post(
        "/v1/jobs",
        {
            "name": name,
            "type": "data_export",
            "connectors": [connector],
            "frequency": "weekly",
            "weekday": "monday",
            "time": "07:15",
            "report": {"columns": ["case_id"]},
        },
    )
    assert made.status == 201, made.text
    return dict(made.body)


async def _finished(me: ApiClient, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        got = await me.get(f"/v1/executions/{execution_id}")
        if got.body["status"] not in ("pending", "processing", "delivering"):
            return dict(got.body)
        assert time.monotonic() < deadline, got.body
        await asyncio.sleep(0.2)


async def test_create_a_daily_csv_export_run_it_and_download_its_report(world: World) -> None:
    tab = await _signed_in(world)
    page = tab.page
    await page.get_by_role("link", name="+ New job").first.click()
    await expect(page.get_by_role("heading", name="New job")).to_be_visible()
    await page.get_by_label("Name (required)").fill("nightly csv")
    await page.get_by_label("Type").select_option("data_export")
    await expect(page.get_by_label("Import connector")).to_be_hidden()
    await page.get_by_label("quality-mail (email)").check()
    await page.get_by_label("Frequency").select_option("daily")
    await expect(page.get_by_label("Day of the week")).to_be_hidden()
    await page.get_by_label("Time of day").fill("06:00")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_label("Date range").select_option("previous_day")
    await expect(page.get_by_label("From", exact=True)).to_be_hidden()
    await page.get_by_label("Columns").fill("\n".join(COLUMNS))
    await page.get_by_label("File format").select_option("csv")
    await tab.check("jobs-new")
    await page.get_by_role("button", name="Save job").click()

    await expect(page.get_by_role("status")).to_contain_text("nightly csv is saved")
    row = page.locator("tr", has_text="nightly csv")
    await expect(row).to_contain_text("Data export")
    await expect(row).to_contain_text("quality-mail")
    await expect(row).to_contain_text("Daily at 06:00 (Europe/Berlin)")
    await expect(row).to_contain_text("Enabled")
    await tab.check("jobs-list")
    saved = (await world.api.as_(world.key).get("/v1/jobs")).body["items"]
    [job] = [j for j in saved if j["name"] == "nightly csv"]
    assert job["report"]["columns"] == COLUMNS and job["report"]["format"] == "csv"
    assert job["connectors"] == [world.mail_connector] and job["time"] == "06:00"

    await page.get_by_role("button", name="Run nightly csv now").click()
    await expect(page.get_by_role("status")).to_contain_text("nightly csv is running")
    await expect(page.get_by_role("link", name=re.compile("Follow run exe_"))).to_be_visible()
    await tab.check("jobs-triggered")

    await page.get_by_role("link", name="Execution History", exact=True).click()
    await expect(page.get_by_role("heading", name="Execution History")).to_be_visible()
    run_row = page.locator("tbody tr", has_text="nightly csv")
    deadline = time.monotonic() + 120
    while "Success" not in await run_row.inner_text():
        assert time.monotonic() < deadline, await run_row.inner_text()
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(run_row).to_contain_text(f"{ROWS} rows exported")
    await expect(run_row).to_contain_text("quality-mail")
    await tab.check("executions-list")

    await run_row.get_by_role("link", name=re.compile("nightly csv")).click()
    await expect(page.get_by_role("heading", name="Run of nightly csv")).to_be_visible()
    await expect(page.locator("dl.facts")).to_contain_text("Success")
    await expect(page.locator("ul.reports")).to_contain_text("link expires 2026-11-30")
    await expect(page.get_by_role("region", name="Deliveries")).to_contain_text("quality-mail")
    await tab.check("execution-detail")
    async with page.expect_download() as info:
        await page.get_by_role("link", name=re.compile(r"^Download .+\.csv$")).click()
    download = await info.value
    data = Path(await download.path()).read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(data)))
    assert table[0] == COLUMNS
    assert sorted(r[1] for r in table[1:]) == [f"CON-{i:03d}" for i in range(ROWS)]
    mail = world.smtp.wait_for(lambda m: "nightly csv" in str(m["Subject"]))[0]
    assert "/v1/reports/rpt_" in mail.get_content()
    await tab.close()


async def test_the_history_filters_by_status_and_type_and_pages(world: World) -> None:
    me = world.api.as_(world.key)
    job = await _api_job(me, "filtered", world.mail_connector)
    run = await me.post(f"/v1/jobs/{job['id']}/trigger")
    assert run.status == 202, run.text
    assert (await _finished(me, run.body["id"]))["status"] == "success"

    tab = await _signed_in(world)
    page = tab.page
    await tab.goto("/console/executions")
    await page.get_by_label("Status").select_option("handler_failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("No runs match these filters")).to_be_visible()
    assert "status=handler_failed" in page.url
    await tab.check("executions-filter-none")

    await page.get_by_label("Status").select_option("success")
    await page.get_by_label("Type").select_option("data_export")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    await expect(rows.filter(has_text="filtered")).to_have_count(1)
    for text in await rows.all_inner_texts():
        assert "Success" in text and "Data export" in text
    await tab.check("executions-filter-success")

    await page.get_by_role("link", name="Show every run").click()
    await expect(page.get_by_label("Status")).to_have_value("")

    await tab.goto("/console/executions?status=success&limit=1")
    first = await page.locator("tbody tr").get_attribute("data-execution")
    await page.get_by_role("link", name="Next page").click()
    assert "status=success" in page.url and "limit=1" in page.url
    second = await page.locator("tbody tr").get_attribute("data-execution")
    assert first and second and first != second, "the next page holds the next run"
    await expect(page.locator("tbody tr")).to_contain_text("Success")
    await tab.check("executions-page-2")
    await tab.goto("/console/executions?status=bogus")
    await expect(page.get_by_role("alert")).to_be_visible()
    await tab.check("executions-filter-refused")
    await tab.close()


async def test_disable_and_enable_a_job(world: World) -> None:
    me = world.api.as_(world.key)
    job = await _api_job(me, "pausable", world.mail_connector)
    tab = await _signed_in(world)
    page = tab.page
    await tab.goto("/console/jobs")
    row = page.locator("tr", has_text="pausable")
    await expect(row).to_contain_text("Weekly on Monday at 07:15")
    await row.get_by_role("button", name="Disable pausable").click()
    await expect(page.get_by_role("status")).to_contain_text("pausable is disabled")
    await expect(row).to_contain_text("Disabled")
    await tab.check("jobs-disabled")
    assert (await me.get(f"/v1/jobs/{job['id']}")).body["enabled"] is False

    await row.get_by_role("button", name="Enable pausable").click()
    await expect(page.get_by_role("status")).to_contain_text("pausable is enabled")
    await expect(row).to_contain_text("Enabled")
    await tab.check("jobs-enabled")
    assert (await me.get(f"/v1/jobs/{job['id']}")).body["enabled"] is True
    await tab.close()


async def test_delete_a_job_after_confirming(world: World) -> None:
    me = world.api.as_(world.key)
    job = await _api_job(me, "doomed", world.mail_connector)
    tab = await _signed_in(world)
    page = tab.page
    await tab.goto("/console/jobs")
    await page.locator("tr", has_text="doomed").get_by_role("link", name="Delete doomed").click()
    await expect(page.get_by_role("heading", name="Delete job doomed?")).to_be_visible()
    await tab.check("jobs-delete-confirm")
    await page.get_by_role("link", name="Cancel").click()
    await expect(page.locator("tr", has_text="doomed")).to_have_count(1)

    await page.locator("tr", has_text="doomed").get_by_role("link", name="Delete doomed").click()
    await page.get_by_role("button", name="Delete doomed").click()
    await expect(page.get_by_role("status")).to_contain_text("doomed is deleted")
    await expect(page.locator("tr", has_text="doomed")).to_have_count(0)
    await tab.check("jobs-deleted")
    assert (await me.get(f"/v1/jobs/{job['id']}")).status == 404
    await tab.close()


async def test_a_refused_job_shows_why_beside_the_form(world: World) -> None:
    tab = await _signed_in(world)
    page = tab.page
    await tab.goto("/console/jobs/new")
    await page.get_by_label("Name (required)").fill("no destination")
    await page.get_by_label("Type").select_option("data_import")
    await expect(page.get_by_label("Import connector")).to_be_visible()
    await expect(page.get_by_label("Quality profile")).to_be_hidden()
    await expect(page.get_by_text("Deliver to (export connectors)")).to_be_hidden()
    await page.get_by_label("Frequency").select_option("weekly")
    await expect(page.get_by_label("Day of the week")).to_be_visible()
    await page.get_by_label("Ends").select_option("on")
    await expect(page.get_by_label("End date")).to_be_visible()
    await page.get_by_label("Type").select_option("data_export")
    await expect(page.get_by_label("Quality profile")).to_be_visible()
    await page.get_by_role("button", name="Save job").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_label("Name (required)")).to_have_value("no destination")
    await tab.check("jobs-new-refused")
    listed = (await world.api.as_(world.key).get("/v1/jobs")).body["items"]
    assert "no destination" not in [j["name"] for j in listed]
    await tab.close()


async def test_another_tenants_job_and_run_are_not_found(world: World) -> None:
    them = world.api.as_(world.other_key)
    dest = await them.post(
        "/v1/export-connectors",
        {"name": "globex-mail", "config": {"type": "email", "to": ["qa@globex.example"]}},
    )
    assert dest.status == 201, dest.text
    job = await _api_job(them, "globex-secret", dest.body["id"])
    run = await them.post(f"/v1/jobs/{job['id']}/trigger")
    assert run.status == 202, run.text
    await _finished(them, run.body["id"])

    tab = await _signed_in(world)
    page = tab.page
    for path in (
        f"/console/jobs/{job['id']}/delete",
        f"/console/executions/{run.body['id']}",
    ):
        response = await page.goto(world.browser.base + path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "globex-secret" not in await page.content()
    await tab.check("jobs-other-tenant-404")
    refused = await page.request.post(
        world.browser.base + f"/console/jobs/{job['id']}/trigger",
        form={"csrf_token": await page.locator("input[name=csrf_token]").first.input_value()},
    )
    assert refused.status == 404
    await tab.goto("/console/jobs")
    assert "globex-secret" not in await page.content()
    await tab.goto("/console/executions")
    assert "globex-secret" not in await page.content()
    await tab.close()


async def test_jobs_and_history_read_well_at_phone_width(world: World) -> None:
    await _api_job(
        world.api.as_(world.key), "a job with a rather long name for phones", world.mail_connector
    )
    tab = await _signed_in(world, PHONE)
    for path, name in (
        ("/console/jobs", "jobs-phone"),
        ("/console/jobs/new", "jobs-new-phone"),
        ("/console/executions", "executions-phone"),
    ):
        await tab.goto(path)
        width = await tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path}: no sideways scrolling at 390 px"
        await tab.check(name)
    await tab.close()
