"""The console's Analysis and Files & dead letters sections in a real browser.

The service runs in process against real Kafka, PostgreSQL and an SMTP server; a local import
connector (made through the API) reads a CSV with one bad row and a chat transcript. Through the
UI: the results list and its filters, a case with its turns, scores and lineage, "Email me"
(refused until the user's address is verified, then sent), the file's outcome, and replaying
the dead letter (failing, then, once the connector's mapping is fixed, passing). Another
tenant's case is not found.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, until
from console_support import PHONE, ConsoleWorld, console_settings, console_world
from fixtures import mail_settings
from playwright.async_api import expect
from servers.postgres import PostgresServer
from servers.smtp import SmtpServer

from streams.clock import ManualClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
EXPORT = (
    "call_id,started_at,ended_at,legacy_start,agent_id,team\n"
    "R-1,2026-11-20T09:00:00Z,,2026-11-20T09:00:00Z,a-1,Sales\n"
    "R-2,see legacy_start,,2026-11-20T10:00:00Z,a-2,Sales\n"
)
CHAT = {
    "external_interaction_id": "CHAT-1",
    "started_at": "2026-11-20T08:00:00Z",
    "agent_id": "a-chat",
    "turns": [
        {"speaker": "customer", "at": "2026-11-20T08:00:05Z", "text": "My invoice is wrong."},
        {"speaker": "agent", "at": "2026-11-20T08:00:20Z", "text": "Thank you, let me check."},
    ],
}


@dataclass
class World(ConsoleWorld):
    connector_id: str
    smtp: SmtpServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    kafka: str,
    pg_server: PostgresServer,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    data = tmp_path_factory.mktemp("console-results")
    settings = console_settings(
        kafka,
        pg_server,
        data,
        mail=mail_settings(smtp_server),
        runner={"reconcile_interval_seconds": 0.2},
    )
    inbox = Path(data) / "local" / "acme" / "inbox"
    inbox.mkdir(parents=True)
    async with console_world(settings, ManualClock(NOW)) as c:
        me = c.api.as_(c.key)
        made = await me.post(
            "/v1/connectors",
            {
                "name": "drop",
                "store": {"type": "local", "root": str(inbox)},
                "poll": {"interval_seconds": 0.5},
            },
        )
        assert made.status == 201, made.text
        (inbox / "export.csv").write_text(EXPORT)
        (inbox / "chat-1.json").write_text(json.dumps(CHAT))
        await until(me, "/v1/results", lambda b: len(b["items"]) == 2)
        await until(me, "/v1/dead-letters", lambda b: b["items"][0])
        yield World(**vars(c), connector_id=made.body["id"], smtp=smtp_server)


async def test_results_filter_and_a_case_with_turns_scores_and_lineage(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await page.get_by_role("link", name="Analysis").click()
    await expect(page.get_by_role("heading", name="Analysis", exact=True)).to_be_visible()
    table = page.get_by_role("region", name="Analysis results")
    await expect(table.get_by_role("row")).to_have_count(3)  # header + R-1 + CHAT-1
    await tab.check("results-list")

    await page.get_by_label("Agent").fill("a-chat")
    await page.get_by_label("Analysed since").fill("2026-11-01")
    await page.get_by_role("button", name="Filter").click()
    await expect(table.get_by_role("row")).to_have_count(2)
    await expect(table).to_contain_text("CHAT-1")
    assert "agent=a-chat" in page.url
    await tab.check("results-filtered")

    await table.get_by_role("link").first.click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Case "))).to_be_visible()
    turns = page.locator("ol.turns li")
    await expect(turns).to_have_count(2)
    await expect(turns.first).to_contain_text("Customer")
    await expect(turns.first).to_contain_text("My invoice is wrong.")
    await expect(turns.first).to_contain_text("2026-11-20 08:00:05 UTC")
    await expect(
        page.get_by_role("heading", name=re.compile(r"^Profile .* on version 1"))
    ).to_be_visible()
    await expect(page.get_by_role("region", name=re.compile("^Scores of profile"))).to_be_visible()
    lineage = page.get_by_role("region", name="Version 1", exact=True)
    await expect(lineage).to_contain_text("File chat-1.json row 1 (connector drop)")
    await expect(lineage).to_contain_text("Processed")
    await tab.check("results-case")

    bad = await tab.page.goto(world.browser.base + "/console/results?since=yesterday")
    assert bad is not None and bad.status == 422
    await expect(page.get_by_role("alert")).to_be_visible()
    await tab.check("results-bad-filter")
    await tab.close()


async def test_email_me_is_refused_until_the_address_is_verified_then_sent(world: World) -> None:
    me = world.api.as_(world.key)
    user = await me.post("/v1/users", {"name": "Rowan", "email": "rowan@acme.example"})
    assert user.status == 201, user.text
    made = await world.api.as_(OPERATOR_TOKEN).post(
        "/v1/tenants/acme/keys", {"name": "quinn", "user_id": user.body["id"]}
    )
    assert made.status == 201, made.text
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(made.body["key"])
    await tab.goto("/console/results?agent=a-1")
    await page.get_by_role("button", name="Email me").click()
    await expect(page.get_by_role("alert")).to_contain_text("not verified")
    await tab.check("results-email-refused")

    verify = world.smtp.wait_for(lambda m: m["X-Envelope-To"] == "rowan@acme.example")[0]
    [link] = re.findall(r"https?://\S+/v1/email-verification\?token=\S+", verify.get_content())
    async with aiohttp.ClientSession() as http, http.get(link) as resp:
        assert resp.status == 200

    await tab.goto("/console/results?agent=a-1")
    await page.get_by_label("Period", exact=True).select_option("custom")
    await page.get_by_label("From (custom period)").fill("2026-01-01")
    await page.get_by_label("To, not included (custom period)").fill("2027-01-01")
    await page.get_by_role("button", name="Email me").click()
    await expect(page.get_by_role("status")).to_contain_text("e-mailed to rowan@acme.example")
    await expect(page.get_by_role("heading", name="Export report")).to_be_visible()
    download = page.get_by_role("link", name=re.compile(r"^Download report-.*\.csv$"))
    await expect(download).to_have_count(1)
    await tab.check("results-reports")
    mails = world.smtp.wait_for(
        lambda m: m["X-Envelope-To"] == "rowan@acme.example" and "report" in m["Subject"]
    )
    assert "1 row(s)" in mails[0]["Subject"]  # agent a-1 only
    await tab.close()

    tab = await world.browser.tab()
    await tab.sign_in(world.key)  # a key of no user
    await tab.goto("/console/results")
    await tab.page.get_by_role("button", name="Email me").click()
    await expect(tab.page.get_by_role("alert")).to_contain_text("does not act for a user")
    await tab.check("results-email-no-user")
    await tab.close()


async def test_files_show_the_outcome_and_a_dead_letter_replays_once_fixed(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await page.get_by_role("link", name="Files & dead letters").click()
    files = page.get_by_role("region", name="Recent files")
    row = files.get_by_role("row").filter(has_text="export.csv")
    await expect(row).to_contain_text("Partial")
    await expect(row).to_contain_text("bad_timestamp: 1")
    await expect(files.get_by_role("row").filter(has_text="chat-1.json")).to_contain_text(
        "Processed"
    )
    letters = page.get_by_role("region", name="Dead letters of reason bad_timestamp")
    await expect(letters).to_contain_text("see legacy_start")
    await tab.check("files-list")

    # Replayed under the same mapping, it fails again and stays open.
    await letters.get_by_label(re.compile("^Select export.csv row 2")).check()
    await page.get_by_role("button", name="Replay selected").click()
    status = page.get_by_role("status")
    await expect(status).to_contain_text("0 replayed, 1 failed")
    await expect(status).to_contain_text("bad_timestamp")
    await tab.check("files-replay-failed")

    # The cause fixed (the connector reads started_at from legacy_start), all of the reason.
    fixed = await world.api.as_(world.key).patch(
        f"/v1/connectors/{world.connector_id}",
        {"ingest": {"mapping": {"started_at": "legacy_start"}}},
    )
    assert fixed.status == 200, fixed.text
    await asyncio.sleep(3)  # the runner restarts the connector with its new settings
    await page.get_by_role("button", name="Replay all open bad_timestamp").click()
    await expect(status).to_contain_text("1 replayed, 0 failed")
    await expect(page.get_by_role("region", name=re.compile("^Dead letters of"))).to_have_count(0)
    await tab.check("files-replayed")

    await page.get_by_label("Dead-letter status").select_option("replayed")
    await page.get_by_role("button", name="Filter").click()
    done = page.get_by_role("region", name="Dead letters of reason bad_timestamp")
    await expect(done).to_contain_text("Replayed")
    await done.get_by_role("link", name=re.compile("^case ")).click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Case "))).to_be_visible()
    await expect(page.locator("dl.facts").first).to_contain_text("R-2")
    await tab.check("files-replayed-case")
    await tab.close()


async def test_the_pages_read_at_phone_width(world: World) -> None:
    tab = await world.browser.tab(PHONE)
    await tab.sign_in(world.key)
    for path, name in (("/console/results", "results-phone"), ("/console/files", "files-phone")):
        await tab.goto(path)
        width = await tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path}: no sideways scrolling at 390 px"
        await tab.check(name)
    await tab.close()


async def test_another_tenants_case_is_not_found(world: World) -> None:
    theirs = world.api.as_(world.other_key)
    pushed = await theirs.post(
        "/v1/conversations",
        {"items": [{"external_interaction_id": "G-1", "started_at": "2026-11-20T11:00:00Z"}]},
        headers={"Idempotency-Key": "globex-1"},
    )
    assert pushed.status == 202, pushed.text
    case_id = pushed.body["items"][0]["case_id"]
    await until(theirs, f"/v1/cases/{case_id}", lambda b: b["case_id"])
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    response = await tab.page.goto(world.browser.base + f"/console/cases/{case_id}")
    assert response is not None and response.status == 404
    await expect(tab.page.get_by_role("heading", name="Not found")).to_be_visible()
    assert "G-1" not in await tab.page.content()
    await tab.check("case-not-found")
    await tab.goto("/console/results")
    assert case_id not in await tab.page.content()
    await tab.close()
