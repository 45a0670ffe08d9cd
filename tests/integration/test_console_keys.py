"""The console in a real browser: API Access (keys), Tenants (operator) and Data Export.

The service runs in process against real Kafka, PostgreSQL and OpenSSH sftp; Chromium (Debian)
is driven by Playwright through the UI only (the API client sets up data and checks effects).
Every page visit ends with a screenshot, an axe-core check and no browser console errors.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, new_tenant, sftp_target
from console_support import PHONE, ConsoleWorld, console_settings, console_world
from playwright.async_api import expect
from servers.postgres import PostgresServer
from servers.sshd import SftpServer

from streams.clock import ManualClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
KEY = re.compile(r"^csk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


@dataclass
class World(ConsoleWorld):
    sftp: SftpServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    kafka: str,
    pg_server: PostgresServer,
    sftp_server: SftpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    settings = console_settings(
        kafka,
        pg_server,
        tmp_path_factory.mktemp("console-keys"),
        console={"session_idle_minutes": 30},
    )
    async with console_world(settings, ManualClock(NOW)) as c:
        yield World(**vars(c), sftp=sftp_server)


async def test_generate_keys_up_to_the_limit_and_revoke_one(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await page.get_by_role("link", name="API Access").click()
    await expect(page.get_by_role("heading", name="API Access")).to_be_visible()
    await tab.check("keys-list")

    # One active key (the console's): a second may be generated, and is shown once.
    await page.get_by_label("Name").fill("nightly-upload")
    await page.get_by_role("button", name="Generate API key").click()
    shown = page.get_by_role("textbox", name="API key nightly-upload")
    await expect(shown).to_have_value(KEY)
    full = await shown.input_value()
    await expect(page.get_by_text("it will not be shown again")).to_be_visible()
    await expect(page.get_by_role("button", name="Copy key")).to_be_visible()
    await expect(page.locator("#key-limit")).to_contain_text("at most 2 active API keys")
    await tab.check("keys-new-key-shown-once")
    listed = await world.api.as_(full).get("/v1/keys")
    assert listed.status == 200, "the key shown works"

    await tab.goto("/console/keys")
    assert full not in await page.content(), "after a reload only the mask is shown"
    row = page.get_by_role("row", name=re.compile("nightly-upload"))
    await expect(row).to_contain_text(full[-4:])
    await expect(row).to_contain_text("Active")
    await expect(page.get_by_role("textbox", name="API key nightly-upload")).to_have_count(0)
    await tab.check("keys-masked-after-reload")

    # A third is refused: the API's message and the explanation.
    await page.get_by_label("Name").fill("one-too-many")
    await page.get_by_role("button", name="Generate API key").click()
    await expect(page.get_by_role("alert")).to_contain_text("already has 2 active API keys")
    await expect(page.locator("#key-limit")).to_contain_text("revoke one before generating")
    await tab.check("keys-limit-reached")

    # Revoke the second key (not this session's), with confirmation.
    await page.get_by_role("link", name="Revoke nightly-upload").click()
    await expect(page.get_by_role("heading", name="Revoke API key nightly-upload?")).to_be_visible()
    assert "signed in to this console with" not in await page.content()
    await tab.check("keys-revoke-confirm")
    await page.get_by_role("button", name="Revoke nightly-upload").click()
    await expect(page.get_by_role("status")).to_contain_text("nightly-upload is revoked")
    await expect(page.get_by_role("row", name=re.compile("nightly-upload"))).to_contain_text(
        "Revoked"
    )
    await tab.check("keys-revoked")
    assert (await world.api.as_(full).get("/v1/keys")).status == 401
    await tab.close()


async def test_revoking_the_sessions_own_key_warns_and_ends_the_session(world: World) -> None:
    own = await new_tenant(world.api.as_(OPERATOR_TOKEN), "initech", "console")
    tab = await world.browser.tab(PHONE)
    page = tab.page
    await tab.sign_in(own)
    await tab.goto("/console/keys")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "no sideways scrolling at 390 px"
    await tab.check("keys-phone")
    await page.get_by_role("link", name="Revoke console").click()
    await expect(page.get_by_role("alert")).to_contain_text("ends this session")
    await tab.check("keys-revoke-own-confirm")
    await page.get_by_role("button", name="Revoke console").click()
    await page.wait_for_load_state("networkidle")
    assert "/console/sign-in" in page.url
    await tab.goto("/console/keys")
    assert "/console/sign-in" in page.url, "the session ended with its key"
    await tab.check("keys-own-revoked-sign-in")
    await tab.close()


async def test_the_operator_creates_a_tenant_gives_it_a_key_and_opens_its_console(
    world: World,
) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(OPERATOR_TOKEN)
    await expect(page.get_by_role("heading", name="Tenants", exact=True)).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile("globex"))).to_contain_text("Active")
    await tab.check("tenants-list")

    await page.get_by_label("Tenant id").fill("umbrella")
    await page.get_by_label("Display name").fill("Umbrella Corp")
    await page.get_by_role("button", name="Create tenant").click()
    await expect(page.get_by_role("status")).to_contain_text("umbrella is created")
    await expect(page.get_by_role("heading", name="Tenant umbrella")).to_be_visible()
    await tab.check("tenant-detail")

    await page.get_by_label("Key name").fill("first")
    await page.get_by_role("button", name="Generate API key").click()
    shown = page.get_by_role("textbox", name="API key first")
    await expect(shown).to_have_value(KEY)
    key = await shown.input_value()
    await tab.check("tenant-key-shown-once")
    own = await world.api.as_(key).get("/v1/tenant")
    assert own.status == 200 and own.body["id"] == "umbrella"

    await page.get_by_role("button", name="Open console as umbrella").click()
    await expect(page.get_by_role("heading", name="Data Import")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("tenant umbrella")
    await tab.check("tenant-opened")
    await page.get_by_role("link", name="API Access").click()
    await expect(page.get_by_role("row", name=re.compile("first"))).to_contain_text(key[-4:])
    await tab.check("tenant-opened-keys")

    await page.get_by_role("link", name="Tenants", exact=True).click()
    await page.get_by_role("button", name="Close tenant umbrella").click()
    await expect(page.get_by_role("link", name="API Access")).to_have_count(0)
    await tab.check("tenant-closed")

    # Disable asks first.
    await page.get_by_role("link", name="umbrella", exact=True).click()
    await page.get_by_role("link", name="Disable umbrella").click()
    await expect(page.get_by_role("heading", name="Disable tenant umbrella?")).to_be_visible()
    await tab.check("tenant-disable-confirm")
    await page.get_by_role("button", name="Disable umbrella").click()
    await expect(page.get_by_role("status")).to_contain_text("umbrella is disabled")
    await tab.check("tenant-disabled")
    assert (await world.api.as_(key).get("/v1/tenant")).status == 401
    await page.get_by_role("button", name="Enable umbrella").click()
    await expect(page.get_by_role("status")).to_contain_text("umbrella is enabled")
    assert (await world.api.as_(key).get("/v1/tenant")).status == 200
    await tab.close()


async def test_tenant_pages_are_not_found_for_a_tenant(world: World) -> None:
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    response = await tab.page.goto(world.browser.base + "/console/tenants")
    assert response is not None and response.status == 404
    await expect(tab.page.get_by_role("heading", name="Not found")).to_be_visible()
    await tab.check("tenants-not-found")
    await tab.close()


async def test_create_an_sftp_export_connector_test_it_failing_then_passing(
    world: World,
) -> None:
    target = sftp_target(world.sftp)
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await page.get_by_role("link", name="Data Export").click()
    await expect(page.get_by_role("heading", name="Data Export")).to_be_visible()
    await tab.check("export-empty")
    await page.get_by_role("link", name="+ New export connector").click()
    await expect(page.get_by_role("heading", name="New export connector")).to_be_visible()
    await page.get_by_label("Name (required)").fill("quality-sftp")
    await page.get_by_label("Type").select_option("sftp")
    await page.get_by_label("Host", exact=True).fill(target["host"])
    await page.get_by_label("Port").fill(str(target["port"]))
    await page.get_by_label("Username").fill(target["username"])
    await page.get_by_label("Password", exact=True).fill("not-the-password")
    await page.get_by_label("Folder").fill(target["root"])
    await expect(page.get_by_label("Recipients")).to_be_hidden()
    await tab.check("export-new")

    # No host key pinned: the test fails and offers the server's key to pin.
    await page.get_by_role("button", name="Test connection").click()
    probe = page.locator("#probe")
    await expect(probe.locator("[data-step=host_key]")).to_contain_text("Failed")
    await tab.check("export-test-failed")
    await page.get_by_role("button", name="Pin this key").click()
    assert await page.get_by_label("Host key").input_value() == target["host_key"]

    await page.get_by_role("button", name="Test connection").click()
    await expect(probe.locator("[data-step=authenticate]")).to_contain_text("Failed")
    await page.get_by_label("Password", exact=True).fill(target["password"])
    await page.get_by_role("button", name="Test connection").click()
    await expect(probe).to_contain_text("Passed")
    await expect(probe.locator("[data-step=write]")).to_contain_text("Passed")
    await tab.check("export-test-passed")

    await page.get_by_role("button", name="Save connector").click()
    await expect(page.get_by_role("status")).to_contain_text("quality-sftp is saved")
    await expect(page.get_by_role("heading", name="Export connector quality-sftp")).to_be_visible()
    await expect(page.get_by_label("Bucket")).to_have_count(0)
    await tab.check("export-detail")
    await page.get_by_role("button", name="Test connection").click()
    await expect(page.locator("#probe")).to_contain_text("Passed")
    await tab.check("export-detail-tested")

    # Edit: the password left empty keeps its value.
    await page.get_by_label("Folder").fill("/upload/reports")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status")).to_contain_text("quality-sftp is saved")
    saved = await world.api.as_(world.key).get("/v1/export-connectors")
    [item] = saved.body["items"]
    assert item["config"]["root"] == "/upload/reports"
    assert item["config"]["password"] == "**********"
    assert item["config"]["host_key"] == target["host_key"]

    await page.get_by_role("link", name="All export connectors").click()
    card = page.locator("article", has_text="quality-sftp")
    await expect(card).to_contain_text("SFTP")
    await tab.check("export-cards")
    await tab.close()


async def test_an_email_export_connector_is_created_and_deleted(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await tab.goto("/console/export/new?type=email")
    await page.get_by_label("Name (required)").fill("ops-mail")
    await expect(page.get_by_label("Host", exact=True)).to_be_hidden()
    await page.get_by_label("Recipients").fill("not-an-address")
    await page.get_by_role("button", name="Save connector").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await tab.check("export-email-invalid")
    await page.get_by_label("Recipients").fill("quality@acme.example\nops@acme.example")
    await page.get_by_role("button", name="Save connector").click()
    await expect(page.get_by_role("status")).to_contain_text("ops-mail is saved")
    await expect(page.locator("dl.facts")).to_contain_text("quality@acme.example, ops@acme")
    await tab.check("export-email-detail")
    await page.get_by_role("link", name="Delete export connector").click()
    await expect(
        page.get_by_role("heading", name="Delete export connector ops-mail?")
    ).to_be_visible()
    await tab.check("export-delete-confirm")
    await page.get_by_role("button", name="Delete ops-mail").click()
    await expect(page.get_by_role("status")).to_contain_text("ops-mail is deleted")
    await tab.check("export-after-delete")
    names = [
        c["name"]
        for c in (await world.api.as_(world.key).get("/v1/export-connectors")).body["items"]
    ]
    assert "ops-mail" not in names
    await tab.close()


async def test_another_tenants_key_and_export_connector_are_not_found(world: World) -> None:
    other = world.api.as_(world.other_key)
    made = await other.post(
        "/v1/export-connectors", {"name": "globex-only", "config": sftp_target(world.sftp)}
    )
    assert made.status == 201, made.text
    keys = await other.get("/v1/keys")
    other_key_id = keys.body["items"][0]["key_id"]
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    for path in (
        f"/console/export/{made.body['id']}",
        f"/console/export/{made.body['id']}/delete",
        f"/console/keys/{other_key_id}/revoke",
    ):
        response = await tab.page.goto(world.browser.base + path)
        assert response is not None and response.status == 404, path
        await expect(tab.page.get_by_role("heading", name="Not found")).to_be_visible()
        assert "globex-only" not in await tab.page.content()
        await tab.check("not-found-" + path.split("/")[2])
    await tab.goto("/console/export")
    assert "globex-only" not in await tab.page.content()
    await tab.check("export-own-only")
    # A forged revoke of the other tenant's key changes nothing.
    token = await tab.page.locator("input[name=csrf_token]").first.input_value()
    reply = await tab.page.request.post(
        world.browser.base + f"/console/keys/{other_key_id}/revoke", form={"csrf_token": token}
    )
    assert reply.status == 404
    assert (await other.get("/v1/keys")).body["items"][0]["status"] == "active"
    await tab.close()
