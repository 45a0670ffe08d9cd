"""Failure notices: one mail to a tenant's notification addresses when a file or a run fails.

Contract of :func:`notify_failure`: at most one mail per ``(tenant, subject_key)`` within
``notifications.quiet_period_hours`` (by the service clock), whatever the number of processes.
The send is claimed first in ``notifications`` (an insert on the unique key, or a conditional
update of a claim older than the quiet period), then sent; a failed send gives the claim back, so
the next failure of that subject tries again. A process killed between claim and send loses
that one notice (the claim holds for the quiet period): a missed mail rather than a double one.

:class:`FailureWatcher` (started by the service where the case store runs, when ``mail.host``
is set) finds file versions judged ``invalid`` and notifies each exactly once: a file version
is claimed in ``notified_files`` before its notice goes out, and given back when the mail
could not be sent (the watcher then backs off). The error names the first dead letter of the
file: its message, reason code and, for schema errors, the column.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import secrets
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams import mail
from streams.cases.store import file_outcomes
from streams.clock import Clock
from streams.control.deadletters import dead_letters
from streams.control.executions import job_of_file
from streams.control.listing import utc
from streams.control.tenants import notification_emails, tenant_zone
from streams.db import insert_ignore, metadata
from streams.settings import Settings
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

notifications = Table(
    "notifications",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("subject_hash", String(64), primary_key=True),  # SHA-256 of subject_key
    Column("subject_key", Text, nullable=False),
    Column("claim", String(32)),  # the claim holding the quiet period; NULL: given back
    Column("claimed_at", DateTime(timezone=True)),  # NULL: the next failure sends
    Column("sent", Integer, nullable=False),  # mails sent for this subject
    Column("last_error", Text),  # why the last send failed
)

notified_files = Table(
    "notified_files",
    metadata,
    Column("file_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("noticed_at", DateTime(timezone=True), nullable=False),
    Column("mailed", Boolean, nullable=False),  # false: quiet period or no addresses
)

Sent = Literal["sent", "quiet", "nobody", "failed"]
_told_nobody: set[str] = set()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _subject_hash(subject_key: str) -> str:
    return hashlib.sha256(subject_key.encode("utf-8", "surrogateescape")).hexdigest()


async def _claim(
    engine: AsyncEngine, tenant: str, subject_key: str, now: dt.datetime, quiet: dt.timedelta
) -> str | None:
    """Claim the right to send about ``subject_key``; return the claim, or None when a mail
    was sent (or is being sent) within the quiet period."""
    claim = secrets.token_hex(16)
    key = _subject_hash(subject_key)
    row = {
        "tenant": tenant,
        "subject_hash": key,
        "subject_key": subject_key,
        "claim": claim,
        "claimed_at": now,
        "sent": 0,
    }
    t = notifications.c
    async with engine.begin() as conn:
        inserted = await conn.execute(
            insert_ignore(engine, notifications, ["tenant", "subject_hash"]), [row]
        )
        if inserted.rowcount == 1:
            return claim
        taken = await conn.execute(
            update(notifications)
            .where(
                t.tenant == tenant,
                t.subject_hash == key,
                or_(t.claimed_at.is_(None), t.claimed_at <= now - quiet),
            )
            .values(claim=claim, claimed_at=now)
        )
    return claim if taken.rowcount == 1 else None


async def _settle(
    engine: AsyncEngine, tenant: str, subject_key: str, claim: str, error: str | None
) -> None:
    """Record a sent mail, or give the claim back after a failed send."""
    t = notifications.c
    values: dict[str, Any] = (
        {"sent": t.sent + 1, "last_error": None}
        if error is None
        else {"claim": None, "claimed_at": None, "last_error": error}
    )
    async with engine.begin() as conn:
        await conn.execute(
            update(notifications)
            .where(
                t.tenant == tenant, t.subject_hash == _subject_hash(subject_key), t.claim == claim
            )
            .values(**values)
        )


def _text(
    tenant: str,
    when: str,
    file: str | None,
    job_id: str | None,
    execution_id: str | None,
    status: str,
    error: str,
    quiet: dt.timedelta,
) -> str:
    lines = [
        f"A {'file' if file else 'run'} of tenant {tenant} failed.",
        "",
        f"File:         {file or '-'}",
        f"Job id:       {job_id or '-'}",
        f"Execution id: {execution_id or '-'}",
        f"Status:       {status}",
        f"Error:        {error}",
        f"When:         {when}",
        "",
        f"Further failures of the same {'file' if file else 'job'} are not mailed for "
        f"{quiet.total_seconds() / 3600:g} hours.",
    ]
    return "\n".join(lines) + "\n"


async def _notify(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    tenant: str,
    *,
    subject_key: str,
    file: str | None,
    job_id: str | None,
    execution_id: str | None,
    status: str,
    error: str,
    now: dt.datetime | None = None,
) -> Sent:
    """Mail the failure unless within the quiet period at ``now`` (default: the clock's time
    now; a noticed file passes the time it was noticed, so the verdict does not depend on how
    long the mail took to start)."""
    async with engine.connect() as conn:
        to = await notification_emails(conn, tenant)
        zone = await tenant_zone(conn, tenant)
    if not to:
        if tenant not in _told_nobody:
            _told_nobody.add(tenant)
            log.info(
                "tenant %s has no notification addresses: failure notices are not sent", tenant
            )
        return "nobody"
    now = now or clock.now()
    quiet = dt.timedelta(hours=settings.notifications.quiet_period_hours)
    claim = await _claim(engine, tenant, subject_key, now, quiet)
    if claim is None:
        log.info("failure of %s/%s not mailed: within the quiet period", tenant, subject_key)
        return "quiet"
    what = _CONTROL.sub("?", file or subject_key)
    subject = f"callstream: {status} - {what}"[:200]
    when = now.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    text = _text(tenant, when, file, job_id, execution_id, status, error, quiet)
    try:
        await mail.send(settings.mail, mail.compose(settings.mail, to, subject, text))
    except mail.MailError as exc:
        log.warning("failure notice for %s/%s not sent: %s", tenant, subject_key, exc)
        await _settle(engine, tenant, subject_key, claim, str(exc))
        return "failed"
    await _settle(engine, tenant, subject_key, claim, None)
    log.info("failure notice for %s/%s sent to %d address(es)", tenant, subject_key, len(to))
    return "sent"


async def notify_failure(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    tenant: str,
    *,
    subject_key: str,
    file: str | None,
    job_id: str | None,
    execution_id: str | None,
    status: str,
    error: str,
) -> bool:
    """Mail the tenant's notification addresses about a failure; return whether a mail went.

    ``subject_key`` (e.g. ``<connector>/<path>`` or ``job/<job_id>``) groups failures for the
    quiet period. Nothing is sent when the tenant has no addresses, within the quiet period, or
    when the relay refuses (logged; the next failure tries again). Never raises for mail errors.
    """
    sent = await _notify(
        settings,
        engine,
        clock,
        tenant,
        subject_key=subject_key,
        file=file,
        job_id=job_id,
        execution_id=execution_id,
        status=status,
        error=error,
    )
    return sent == "sent"


async def file_error(conn: AsyncConnection, tenant: str, file_id: str, reason: str | None) -> str:
    """The error of a rejected file as its first dead letter tells it (row order, file-level
    first): message, reason code and column."""
    t = dead_letters.c
    first = (
        await conn.execute(
            select(t.reason, t.message, t.column, t.row)
            .where(t.tenant == tenant, t.file_id == file_id)
            .order_by(t.row.is_not(None), t.row, t.id)
            .limit(1)
        )
    ).first()
    if first is None:
        return f"the file was rejected ({reason or 'invalid'})"
    where = f" in column [{first.column}]" if first.column else ""
    row = f", row {first.row}" if first.row is not None else ""
    return f"{first.message}{where} (reason {first.reason}{row})"


class FailureWatcher:
    """Notifies each invalid file version once (see the module doc); ``start``/``stop``."""

    LOOKBACK = dt.timedelta(days=2)
    """Files judged longer ago than this (when the watcher first sees them) are not mailed."""
    DEAD_LETTER_WAIT = dt.timedelta(seconds=30)
    """How long a fresh verdict waits for its dead letters (they are stored asynchronously)."""
    BATCH = 100

    def __init__(self, settings: Settings, engine: AsyncEngine, clock: Clock) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        """Start watching in the background."""
        self._task = asyncio.create_task(self._run(), name="failure-watcher")

    async def stop(self) -> None:
        """Stop watching (a mail being sent is abandoned; its file is retried on start)."""
        await cancel_and_wait(self._task)
        self._task = None

    def wake(self) -> None:
        """Look now rather than at the next interval (tests)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.settings.notifications.watch_interval_seconds
        delay = interval
        while True:
            try:
                failed = await self.tick()
                delay = min(delay * 2, 300.0) if failed else interval
            except Exception:  # a database that is away: retry at the next interval
                log.exception("failure watcher: looking for invalid files failed")
                delay = min(delay * 2, 300.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def tick(self) -> int:
        """Notify the invalid file versions not notified yet; return how many mails failed."""
        system_now = dt.datetime.now(dt.UTC)  # decided_at is written by the machine's clock
        fo, nf = file_outcomes.c, notified_files.c
        stmt = (
            select(fo.file_id, fo.tenant, fo.connector, fo.path, fo.reason, fo.decided_at)
            .select_from(file_outcomes.outerjoin(notified_files, nf.file_id == fo.file_id))
            .where(
                fo.outcome == "invalid",
                nf.file_id.is_(None),
                fo.decided_at >= system_now - self.LOOKBACK,
            )
            .order_by(fo.decided_at, fo.file_id)
            .limit(self.BATCH)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        failed = 0
        for row in rows:
            if await self._one(row, system_now) == "failed":
                failed += 1
        return failed

    async def _one(self, row: Any, system_now: dt.datetime) -> Sent | None:
        async with self.engine.connect() as conn:
            error = await file_error(conn, row.tenant, row.file_id, row.reason)
            has_dead = (
                await conn.execute(
                    select(dead_letters.c.id).where(dead_letters.c.file_id == row.file_id).limit(1)
                )
            ).first() is not None
            job = await job_of_file(conn, row.tenant, row.file_id)
        if not has_dead and utc(row.decided_at) > system_now - self.DEAD_LETTER_WAIT:
            return None  # its dead letters are on their way: look again next time
        claim = {
            "file_id": row.file_id,
            "tenant": row.tenant,
            "noticed_at": self.clock.now(),
            "mailed": False,
        }
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                insert_ignore(self.engine, notified_files, ["file_id"]), [claim]
            )
        if taken.rowcount != 1:
            return None  # another worker has it
        sent = await _notify(
            self.settings,
            self.engine,
            self.clock,
            row.tenant,
            subject_key=f"{row.connector}/{row.path}",
            file=row.path,
            job_id=job[0] if job else None,
            execution_id=job[1] if job else None,
            status="invalid",
            error=error,
            now=claim["noticed_at"],
        )
        nf = notified_files.c
        async with self.engine.begin() as conn:
            if sent == "failed":  # give the file back: the next pass tries again
                await conn.execute(notified_files.delete().where(nf.file_id == row.file_id))
            elif sent == "sent":
                await conn.execute(
                    update(notified_files).where(nf.file_id == row.file_id).values(mailed=True)
                )
        return sent
