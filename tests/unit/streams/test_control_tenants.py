"""A tenant's redaction settings on a real SQLite database: stored, merged, refused for
config-file tenants, and reloaded by another process's catalog."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.control import tenants
from streams.control.audit import audit_log
from streams.control.catalog import Catalog
from streams.control.errors import ConflictError, NotFoundError
from streams.control.secrets import SecretBox
from streams.control.tenants import TenantPatch
from streams.db import Database
from streams.redact import RedactionSettings, Redactors
from streams.settings import Settings, TenantSettings

NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
TEXT = "card 4111 1111 1111 1111, call +44 20 7946 0018 or 020 7946 0018"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db:
        for tenant in ("umbrella", "cyberdyne"):
            await tenants.create(db.engine, tenants.TenantIn(id=tenant, name=tenant), "test")
        await tenants.sync_config_tenants(db.engine, ["acme"])
        yield db.engine


def redactors() -> Redactors:
    """One process's redactors: acme is a config-file tenant with policy keep."""
    return Redactors({"acme": RedactionSettings(policy="keep")}, lambda p: p.encode().ljust(32))


def patch(**redaction: object) -> TenantPatch:
    return TenantPatch.model_validate({"redaction": redaction})


async def test_a_set_policy_is_stored_shown_merged_audited_and_applied_at_once(
    engine: AsyncEngine,
) -> None:
    mine = redactors()
    assert (await _get(engine, "umbrella")).redaction == RedactionSettings()
    out = await tenants.update_settings(
        engine, "umbrella", patch(policy="hash", default_region="gb"), "key:1", NOW, mine
    )
    assert out.redaction == RedactionSettings(policy="hash", default_region="GB")
    assert mine.settings_for("umbrella") == out.redaction  # this process: at once
    text, counts = mine.for_tenant("umbrella").redact_text(TEXT)
    assert counts == {"card": 1, "phone": 2} and "[CARD:" in text and "7946" not in text
    # fields left out keep their value; other settings leave redaction alone
    out = await tenants.update_settings(engine, "umbrella", patch(policy="keep"), "k", NOW, mine)
    assert out.redaction == RedactionSettings(policy="keep", default_region="GB")
    tz = TenantPatch(timezone="Asia/Kolkata")
    out = await tenants.update_settings(engine, "umbrella", tz, "k", NOW, mine)
    assert out.redaction.policy == "keep" and out.timezone == "Asia/Kolkata"
    assert (await _get(engine, "umbrella")).redaction.policy == "keep"
    assert (await _get(engine, "cyberdyne")).redaction == RedactionSettings()  # untouched
    assert mine.settings_for("cyberdyne") == RedactionSettings()
    async with engine.connect() as conn:
        details = [
            json.loads(r.detail)
            for r in await conn.execute(select(audit_log).where(audit_log.c.action == "update"))
        ]
    assert details[0]["redaction"] == {"policy": "hash", "default_region": "GB"}
    with pytest.raises(NotFoundError):
        await tenants.update_settings(engine, "nobody", patch(policy="hash"), "k", NOW, mine)
    assert mine.settings_for("nobody") == RedactionSettings()


async def test_a_config_file_tenants_redaction_is_refused_naming_the_field(
    engine: AsyncEngine,
) -> None:
    mine = redactors()
    with pytest.raises(ConflictError, match="config file") as err:
        await tenants.update_settings(engine, "acme", patch(policy="hash"), "k", NOW, mine)
    assert err.value.field == "redaction"
    assert mine.settings_for("acme").policy == "keep"
    # its other settings may change; it is shown with the config file's redaction
    out = await tenants.update_settings(engine, "acme", TenantPatch(timezone="UTC"), "k", NOW, mine)
    assert out.redaction == RedactionSettings()  # the column: never written
    assert tenants.shown(out, mine).redaction == RedactionSettings(policy="keep")
    api_tenant = await _get(engine, "umbrella")
    assert tenants.shown(api_tenant, mine) is api_tenant


async def test_another_processs_catalog_applies_a_change_at_its_next_reload(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, demo=False, tenants=[TenantSettings(id="acme")])
    box = SecretBox([Fernet.generate_key().decode()])
    here, there = redactors(), redactors()
    catalog = Catalog(settings, engine, box, there)
    await tenants.update_settings(engine, "umbrella", patch(policy="hash"), "k", NOW, here)
    assert there.settings_for("umbrella") == RedactionSettings()  # not reloaded yet
    await catalog.desired()  # what the runner's reconcile loop calls every interval
    assert there.settings_for("umbrella") == RedactionSettings(policy="hash")
    assert (
        there.for_tenant("umbrella").redact_text(TEXT)[0]
        == here.for_tenant("umbrella").redact_text(TEXT)[0]
    )
    await tenants.update_settings(engine, "umbrella", patch(policy="keep"), "k", NOW, here)
    await catalog.reload_redaction()
    assert there.for_tenant("umbrella").redact_text(TEXT) == (TEXT, {})
    assert there.settings_for("cyberdyne") == RedactionSettings()


async def test_an_unreadable_stored_value_reads_as_the_default_and_is_logged_once(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine.begin() as conn:
        bad = json.dumps({"policy": "shout"})
        await conn.execute(
            update(tenants.tenants).where(tenants.tenants.c.id == "umbrella").values(redaction=bad)
        )
    caplog.set_level(logging.ERROR, "streams.control.tenants")
    assert (await _get(engine, "umbrella")).redaction == RedactionSettings()
    async with engine.connect() as conn:
        assert await tenants.redaction_settings(conn) == {}
    assert len([r for r in caplog.records if "umbrella" in r.getMessage()]) == 1
    # setting it again through the API repairs it
    out = await tenants.update_settings(engine, "umbrella", patch(policy="hash"), "k", NOW)
    assert out.redaction.policy == "hash"


async def _get(engine: AsyncEngine, tenant: str) -> tenants.Tenant:
    async with engine.connect() as conn:
        return await tenants.get(conn, tenant)
