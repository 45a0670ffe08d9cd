"""The console in a real browser: sign-in, sessions, Data Import with Test connection.

The service runs in process against real Kafka, PostgreSQL and OpenSSH sftp; Chromium (Debian)
is driven by Playwright. Every page visit ends with a screenshot, an axe-core check (no serious
or critical violation) and no browser console errors.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from console_support import PHONE, ConsoleWorld, console_settings, console_world
from playwright.async_api import expect
from servers.postgres import PostgresServer
from servers.sshd import SftpServer

from streams.clock import ManualClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


@dataclass
class World(ConsoleWorld):
    clock: ManualClock
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
        tmp_path_factory.mktemp("console"),
        console={"session_idle_minutes": 30},
        runner={"reconcile_interval_seconds": 0.2},
    )
    clock = ManualClock(NOW)
    async with console_world(settings, clock) as c:
        yield World(**vars(c), clock=clock, sftp=sftp_server)


async def test_sign_in_refuses_a_bad_key_and_a_session_ends_on_sign_out(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.goto("/console/import")
    assert "/console/sign-in" in page.url, "a page needs a session"
    await tab.sign_in("csk_000000000000_" + "x" * 43)
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await tab.check("sign-in-refused")

    await tab.sign_in(world.key)
    await expect(page.get_by_role("heading", name="Data Import")).to_be_visible()
    cookie = next(c for c in await tab.context.cookies() if c["name"] == "callstream_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert world.key not in str(await tab.context.cookies())

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_contain_text("signed out")
    await tab.goto("/console/import")
    assert "/console/sign-in" in page.url, "the session ended with sign-out"
    await tab.check("signed-out")
    await tab.close()


async def test_a_form_without_the_csrf_token_changes_nothing(world: World) -> None:
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    reply = await tab.page.request.post(
        world.browser.base + "/console/import/new",
        form={"name": "forged", "type": "local", "store.root": "/tmp"},
    )
    assert reply.status == 403
    listed = await world.api.as_(world.key).get("/v1/connectors")
    assert [c["name"] for c in listed.body["items"]] == []
    await tab.close()


async def test_an_idle_session_expires(world: World) -> None:
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    await tab.goto("/console/import")
    assert tab.page.url.endswith("/console/import")
    world.clock.advance(dt.timedelta(minutes=31))
    await tab.goto("/console/import")
    assert "/console/sign-in" in tab.page.url, "30 idle minutes end the session"
    await tab.close()


async def test_create_an_sftp_connector_test_it_failing_then_passing_and_save_it(
    world: World,
) -> None:
    account = world.sftp.users["cs_pw"]
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await page.get_by_role("link", name="+ New connector").first.click()
    await expect(page.get_by_role("heading", name="New import connector")).to_be_visible()
    await page.get_by_label("Name (required)").fill("daily-sftp")
    await page.get_by_label("Type").select_option("sftp")
    await page.get_by_label("Host", exact=True).fill(world.sftp.host)
    await page.get_by_label("Port").fill(str(world.sftp.port))
    await page.get_by_label("Username").fill(account.name)
    await page.get_by_label("Password", exact=True).fill("not-the-password")
    await page.get_by_label("Folder").fill("/upload")
    await tab.check("import-new-connector")

    # First run: no host key pinned yet: the test fails and shows the fingerprint to pin.
    await page.get_by_role("button", name="Test connection").click()
    probe = page.locator("#probe")
    await expect(probe).to_contain_text("Failed")
    await expect(probe.locator("[data-step=host_key]")).to_contain_text("Failed")
    fingerprint = await probe.locator(".fingerprint").inner_text()
    assert fingerprint == world.sftp.host_key_fingerprint
    await tab.check("import-test-failed")
    await page.get_by_role("button", name="Pin this key").click()
    assert await page.get_by_label("Host key").input_value() == world.sftp.host_key_line

    # Pinned, but the password is wrong: authenticate fails.
    await page.get_by_role("button", name="Test connection").click()
    await expect(probe.locator("[data-step=authenticate]")).to_contain_text("Failed")

    await page.get_by_label("Password", exact=True).fill(account.password)
    await page.get_by_role("button", name="Test connection").click()
    await expect(probe).to_contain_text("Passed")
    await expect(probe.locator("[data-step=list]")).to_contain_text("Passed")
    await tab.check("import-test-passed")

    await page.get_by_role("button", name="Save connector").click()
    await expect(page.get_by_role("status")).to_contain_text("daily-sftp is saved")
    await expect(page.get_by_role("heading", name="Connector daily-sftp")).to_be_visible()
    await tab.check("import-connector-detail")

    await page.get_by_role("link", name="All connectors").click()
    card = page.locator("article", has_text="daily-sftp")
    await expect(card).to_contain_text("SFTP")
    await tab.check("import-cards")
    saved = await world.api.as_(world.key).get("/v1/connectors")
    assert [c["name"] for c in saved.body["items"]] == ["daily-sftp"]
    assert saved.body["items"][0]["store"]["password"] == "**********"
    await tab.close()


async def test_a_generated_key_pair_shows_its_public_key_to_copy(world: World) -> None:
    tab = await world.browser.tab()
    page = tab.page
    await tab.sign_in(world.key)
    await tab.goto("/console/import/new?type=sftp")
    await page.get_by_label("Name (required)").fill("keyed-sftp")
    await page.get_by_label("Host", exact=True).fill(world.sftp.host)
    await page.get_by_label("Port").fill(str(world.sftp.port))
    await page.get_by_label("Username").fill("cs_pw")
    await page.get_by_label("Sign in with").select_option("generate")
    await expect(page.get_by_label("Password", exact=True)).to_be_hidden()
    await page.get_by_label("Host key").fill(world.sftp.host_key_line)
    await page.get_by_label("Folder").fill("/keyed")
    await page.get_by_role("button", name="Save connector").click()
    public = page.locator("#public-key")
    await expect(public).to_have_value(
        re.compile(r"^ssh-ed25519 AAAA\S+ callstream-acme-keyed-sftp")
    )
    await expect(page.get_by_role("button", name="Copy public key")).to_be_visible()
    await tab.check("import-public-key")
    await tab.close()


async def test_the_console_is_usable_at_phone_width(world: World) -> None:
    tab = await world.browser.tab(PHONE)
    await tab.sign_in(world.key)
    await tab.goto("/console/import")
    width = await tab.page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "no sideways scrolling at 390 px"
    await tab.check("import-phone")
    await tab.close()


async def test_another_tenants_connector_is_not_found(world: World) -> None:
    made = await world.api.as_(world.other_key).post(
        "/v1/connectors",
        {
            "name": "globex-only",
            "store": {
                "type": "sftp",
                "host": world.sftp.host,
                "port": world.sftp.port,
                "username": "cs_pw",
                "password": "secret",
                "host_key": world.sftp.host_key_line,
                "root": "/globex",
            },
        },
    )
    assert made.status == 201, made.text
    tab = await world.browser.tab()
    await tab.sign_in(world.key)
    response = await tab.page.goto(world.browser.base + f"/console/import/{made.body['id']}")
    assert response is not None and response.status == 404
    await expect(tab.page.get_by_role("heading", name="Not found")).to_be_visible()
    assert "globex-only" not in await tab.page.content()
    await tab.goto("/console/import")
    assert "globex-only" not in await tab.page.content()
    await tab.close()


async def test_pages_read_and_forms_work_with_javascript_off(world: World) -> None:
    tab = await world.browser.tab(javascript=False)
    page = tab.page
    await tab.sign_in(world.key)
    await expect(page.get_by_role("heading", name="Data Import")).to_be_visible()
    await tab.goto("/console/import/new?type=local")
    await page.get_by_label("Name (required)").fill("no-script")
    await page.get_by_label("Folder").fill("/nowhere/outside")
    await page.get_by_role("button", name="Test connection").click()
    await expect(page.get_by_role("alert")).to_contain_text("must be inside")
    assert await page.get_by_label("Name (required)").input_value() == "no-script"
    await tab.check("import-no-javascript", axe=False)
    await tab.close()
