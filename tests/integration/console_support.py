"""Driving the web console in Debian's Chromium with Playwright (async API), for browser tests.

:class:`ConsoleBrowser` opens one Chromium per test module; :meth:`ConsoleBrowser.tab` gives a
fresh context (no cookies) whose page records every browser console error, failed request and
uncaught exception. :meth:`Tab.check` is what each page visit ends with: a screenshot (saved under
``build/console-screenshots/`` or ``$CALLSTREAM_SCREENSHOTS_DIR``), an axe-core run that must find
no serious or critical violation, and no console errors so far.

Chromium comes from ``apt-get install chromium`` (scripts/bootstrap.sh): Playwright's own browser
download is not reachable here. A browser that cannot start fails the test, never skips it.

:func:`console_settings` and :func:`console_world` are what every browser test module's
module-scoped ``world`` fixture starts from: the service with the console, its API client, an
API key of tenant ``acme`` and one of tenant ``globex`` (for the "another tenant's id in the
URL → 404" checks), and Chromium.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from servers.postgres import PostgresServer
from support import running, settings_for, unique_prefix

from streams.clock import Clock
from streams.service import Service
from streams.settings import Settings

HERE = Path(__file__).parent
AXE = (HERE / "console" / "axe-4.11.0.min.js").read_text(encoding="utf-8")
SHOTS = Path(os.environ.get("CALLSTREAM_SCREENSHOTS_DIR", "build/console-screenshots"))
_PAGE_STATUS = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    """Debian's Chromium (the bootstrap installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("chromium is not installed: run scripts/bootstrap.sh")
    return found


@dataclass
class Tab:
    """One browser context and its page, with what went wrong in it."""

    context: BrowserContext
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)

    async def goto(self, path: str) -> None:
        """Open ``path`` of the console and wait for it to settle."""
        response = await self.page.goto(self.base + path)
        assert response is not None
        await self.page.wait_for_load_state("networkidle")

    async def sign_in(self, secret: str) -> None:
        """Sign in through the form."""
        await self.goto("/console/sign-in")
        await self.page.get_by_label("API key or operator token").fill(secret)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_load_state("networkidle")

    async def check(self, name: str, *, axe: bool = True) -> None:
        """Screenshot the page as ``name``, run axe-core, and fail on console errors."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        if axe:
            violations = await run_axe(self.page)
            assert violations == [], f"{name}: accessibility violations {violations}"
        assert self.errors == [], f"{name}: browser console errors {self.errors}"

    async def close(self) -> None:
        await self.context.close()


async def run_axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page (id, impact, help, targets)."""
    await page.evaluate(AXE + "\n;0")  # through DevTools: not subject to the page's CSP
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


class ConsoleBrowser:
    """A running Chromium for one test module."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.browser = browser
        self.base = base

    async def tab(self, viewport: dict[str, int] | None = None, *, javascript: bool = True) -> Tab:
        """A fresh context (no cookies) at ``viewport`` (desktop by default)."""
        context = await self.browser.new_context(
            viewport=viewport or DESKTOP, accept_downloads=True, java_script_enabled=javascript
        )
        page = await context.new_page()
        tab = Tab(context, page, self.base)

        def on_console(message: ConsoleMessage) -> None:
            if message.type != "error":
                return
            where = message.location.get("url")
            if _PAGE_STATUS.match(message.text) and where == page.url:
                return  # the page's own 4xx (a refused form, a 404): tests assert it themselves
            tab.errors.append(f"{message.text} at {where}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
        page.on(
            "requestfailed",
            lambda req: (
                tab.errors.append(f"request failed: {req.method} {req.url}")
                if not re.search(r"/download|/reports/", req.url)
                else None
            ),
        )
        return tab


@contextlib.asynccontextmanager
async def launch(base: str) -> AsyncIterator[ConsoleBrowser]:
    """Start Chromium (headless, --no-sandbox as root) for the service at ``base``."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield ConsoleBrowser(browser, base.rstrip("/"))
        finally:
            await browser.close()


def console_settings(
    kafka: str, pg_server: PostgresServer, data_dir: Path, **extra: Any
) -> Settings:
    """Settings of a service for browser tests, on an emptied PostgreSQL database: the
    operator token, the API open to 127.0.0.1, and ``extra`` sections (as ``settings_for``)."""
    pg_server.reset()
    return settings_for(
        kafka,
        unique_prefix(),
        data_dir,
        [],
        database_url=pg_server.async_url(),
        api={"operator_token": OPERATOR_TOKEN, "connect_allow": ["127.0.0.1/32"]},
        **extra,
    )


@dataclass
class ConsoleWorld:
    """A running service with its console, as :func:`console_world` starts it."""

    service: Service
    api: ApiClient
    browser: ConsoleBrowser
    key: str
    """An API key (named "console") of tenant ``acme``, the one the tests sign in with."""
    other_key: str
    """An API key of tenant ``globex``, whose ids ``acme`` must not reach."""


@contextlib.asynccontextmanager
async def console_world(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[ConsoleWorld]:
    """Run the service on ``clock``, create tenant ``globex`` and ``acme``'s key, and start
    Chromium; all of it stops when the block ends."""
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as api:
        operator = api.as_(OPERATOR_TOKEN)
        made = await operator.post("/v1/tenants/acme/keys", {"name": "console"})
        assert made.status == 201, made.text
        other = await new_tenant(operator, "globex")
        async with launch(service.http_url or "") as browser:
            yield ConsoleWorld(service, api, browser, made.body["key"], other)
