"""Failure notices: one mail per subject within the quiet period, claimed in the database;
a failed send gives the claim back (SQLite, the relay replaced by a recorder)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_asyncio

from streams import mail, notify
from streams.cases.store import file_outcomes
from streams.clock import ManualClock
from streams.control import tenants
from streams.control.deadletters import dead_letters
from streams.control.tenants import TenantIn, TenantPatch
from streams.db import Database
from streams.settings import Settings

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}") as database:
        await tenants.create(database.engine, TenantIn(id="acme", name="Acme"), "test")
        yield database


class Relay:
    """Records sent messages; fails while ``down``."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.down = False

    async def send(self, _settings: object, message: EmailMessage) -> None:
        if self.down:
            raise mail.MailError("connect", "relay down")
        self.sent.append(message)


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Relay:
    r = Relay()
    monkeypatch.setattr(mail, "send", r.send)
    return r


SETTINGS = Settings(demo=False, mail={"host": "relay.invalid"})


async def _fail(db: Database, clock: ManualClock, key: str = "crm/a.csv") -> bool:
    return await notify.notify_failure(
        SETTINGS,
        db.engine,
        clock,
        "acme",
        subject_key=key,
        file=key.split("/", 1)[1],
        job_id="job_1",
        execution_id="exe_1",
        status="invalid",
        error="Invalid data type in column [cust_phone_no]",
    )


async def _addresses(db: Database) -> None:
    patch = TenantPatch.model_validate({"notification_emails": ["ops@example.com"]})
    await tenants.update_settings(db.engine, "acme", patch, "test", T0)


async def test_no_addresses_sends_nothing(db: Database, relay: Relay) -> None:
    assert await _fail(db, ManualClock(T0)) is False
    assert relay.sent == []


async def test_one_mail_per_subject_within_the_quiet_period(db: Database, relay: Relay) -> None:
    await _addresses(db)
    clock = ManualClock(T0)
    assert await _fail(db, clock) is True
    [message] = relay.sent
    text = message.get_content()
    for part in ("a.csv", "job_1", "exe_1", "invalid", "column [cust_phone_no]"):
        assert part in text
    clock.advance(dt.timedelta(hours=23))
    assert await _fail(db, clock) is False
    assert await _fail(db, clock, "crm/b.csv") is True, "another file has its own period"
    clock.advance(dt.timedelta(hours=1, seconds=1))
    assert await _fail(db, clock) is True
    assert len(relay.sent) == 3


async def test_concurrent_failures_send_once(db: Database, relay: Relay) -> None:
    await _addresses(db)
    clock = ManualClock(T0)
    results = await asyncio.gather(*(_fail(db, clock) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert len(relay.sent) == 1


async def test_a_failed_send_gives_the_claim_back(db: Database, relay: Relay) -> None:
    await _addresses(db)
    clock = ManualClock(T0)
    relay.down = True
    assert await _fail(db, clock) is False
    relay.down = False
    assert await _fail(db, clock) is True, "the next failure retries at once"
    assert len(relay.sent) == 1


async def _invalid_file(db: Database, file_id: str, path: str = "20261120_member.csv") -> None:
    now = dt.datetime.now(dt.UTC)
    async with db.engine.begin() as conn:
        await conn.execute(
            file_outcomes.insert().values(
                file_id=file_id,
                tenant="acme",
                connector="crm",
                path=path,
                version_id=file_id,
                outcome="invalid",
                rows_accepted=0,
                rows_rejected=2,
                reason="no_valid_rows",
                decided_at=now,
            )
        )
        for row, column in ((3, "cust_phone_no"), (2, "cust_email")):
            await conn.execute(
                dead_letters.insert().values(
                    id=f"dl_{file_id}_{row}",
                    tenant="acme",
                    connector="crm",
                    file_id=file_id,
                    path=path,
                    row=row,
                    column=column,
                    reason="invalid_value",
                    message="Invalid data type",
                    occurred_at=now,
                    recorded_at=now,
                    status="open",
                    replay_attempts=0,
                )
            )


async def test_the_watcher_mails_each_invalid_file_once_across_workers(
    db: Database, relay: Relay
) -> None:
    await _addresses(db)
    await _invalid_file(db, "f" * 32)
    clock = ManualClock(T0)
    workers = [notify.FailureWatcher(SETTINGS, db.engine, clock) for _ in range(3)]
    await asyncio.gather(*(w.tick() for w in workers))
    await workers[0].tick()  # a restart sees it noticed
    [message] = relay.sent
    text = message.get_content()
    assert "Invalid data type in column [cust_email] (reason invalid_value, row 2)" in text


async def test_the_watcher_retries_a_file_whose_mail_failed(db: Database, relay: Relay) -> None:
    await _addresses(db)
    await _invalid_file(db, "e" * 32)
    watcher = notify.FailureWatcher(SETTINGS, db.engine, ManualClock(T0))
    relay.down = True
    assert await watcher.tick() == 1
    relay.down = False
    assert await watcher.tick() == 0
    assert len(relay.sent) == 1


async def test_a_file_noticed_within_the_quiet_period_stays_quiet_however_late_it_is_decided(
    db: Database, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict uses the time the file was noticed (claimed), not the time the mail step
    ran: the clock moving past the quiet period in between must not send a mail."""
    await _addresses(db)
    clock = ManualClock(T0)
    watcher = notify.FailureWatcher(SETTINGS, db.engine, clock)
    await _invalid_file(db, "a" * 32)
    assert await watcher.tick() == 0 and len(relay.sent) == 1  # the first version: mailed
    await _invalid_file(db, "b" * 32, path="20261120_member.csv")  # again, within the hour
    addresses = notify.notification_emails

    async def slow(conn: object, tenant: str) -> list[str]:
        clock.advance(dt.timedelta(hours=25))  # a day passes after the notice, before the mail
        return await addresses(conn, tenant)  # type: ignore[arg-type]

    monkeypatch.setattr(notify, "notification_emails", slow)
    await watcher.tick()
    assert len(relay.sent) == 1, "noticed within the quiet period: not mailed"
