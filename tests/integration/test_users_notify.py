"""Users verified through the link of a real mail, tenant settings, and failure notices of an
invalid file (once, quiet period, again after it) — one running service, real aiosmtpd."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from fixtures import mail_settings
from servers.smtp import SmtpServer
from sqlalchemy import select
from support import CSV_HEADER, connector, running, settings_for, unique_prefix

from connectors.local import LocalConfig
from streams.cases.store import file_outcomes
from streams.clock import ManualClock
from streams.control import users
from streams.notify import notified_files
from streams.service import Service

pytestmark = pytest.mark.asyncio(loop_scope="module")

_LINK = re.compile(r"(http://\S+/v1/email-verification\?token=(\S+))")


@dataclass
class World:
    service: Service
    client: ApiClient
    clock: ManualClock
    smtp: SmtpServer
    inbox: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    kafka: str, smtp_server: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("usersnotify")
    inbox = tmp / "inbox"
    inbox.mkdir()
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp,
        [connector("crm", LocalConfig(root=inbox))],
        tenant="notified",
        api={"operator_token": OPERATOR_TOKEN},
        mail=mail_settings(smtp_server),
        notifications={"watch_interval_seconds": 0.3},
    )
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with (
        running(settings, clock=clock) as service,
        ApiClient(service.http_url or "") as client,
    ):
        yield World(service, client, clock, smtp_server, inbox)


async def _mails(smtp: SmtpServer, to: str, count: int, timeout: float = 30) -> list[EmailMessage]:
    return await asyncio.to_thread(
        smtp.wait_for, lambda m: to in m["X-Envelope-To"], count, timeout
    )


def _link(message: EmailMessage) -> tuple[str, str]:
    found = _LINK.search(message.get_content())
    assert found, message.get_content()
    return found.group(1), found.group(2)


async def test_a_user_verifies_the_address_by_following_the_mailed_link(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    me = world.client.as_(await new_tenant(operator, "verifiers"))
    created = await me.post("/v1/users", {"name": "Priya Shah", "email": "Priya@Example.COM"})
    assert created.status == 201, created.text
    user = created.body
    assert user["email"] == "priya@example.com" and user["verified"] is False
    assert user["verification_sent"] is True and user["id"].startswith("usr_")
    [mail] = await _mails(world.smtp, "priya@example.com", 1)
    url, token = _link(mail)
    assert url.startswith(world.service.http_url or "?")
    assert token not in created.text, "the token travels only in the mail"
    async with world.service.api.engine.connect() as conn:
        assert await users.verified_email(conn, "verifiers", user["id"]) is None

    public = world.client.as_(None)
    done = await public.get("/v1/email-verification", params={"token": token})
    assert done.status == 200, done.text
    assert done.body["verified"] is True and done.body["id"] == user["id"]
    again = await public.get("/v1/email-verification", params={"token": token})
    assert again.status == 404 and "already used" in again.body["detail"]
    async with world.service.api.engine.connect() as conn:
        assert await users.verified_email(conn, "verifiers", user["id"]) == "priya@example.com"
        assert await users.verified_email(conn, "someone-else", user["id"]) is None

    listed = await me.get("/v1/users", params={"limit": "1"})
    assert listed.status == 200 and listed.body["items"][0]["verified"] is True
    dup = await me.post("/v1/users", {"name": "Again", "email": "PRIYA@example.com"})
    assert dup.status == 409


async def test_wrong_foreign_and_expired_tokens_are_refused(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    me = world.client.as_(await new_tenant(operator, "expiring"))
    first = (await me.post("/v1/users", {"name": "A", "email": "a@expiring.example"})).body
    second = (await me.post("/v1/users", {"name": "B", "email": "b@expiring.example"})).body
    _, token_a = _link((await _mails(world.smtp, "a@expiring.example", 1))[0])
    public = world.client.as_(None)
    # A's secret under B's id verifies nobody; garbage and near-misses are unknown links.
    secret_a = token_a.split(".", 1)[1]
    for bad in (f"{second['id']}.{secret_a}", token_a[:-1] + "x", "nonsense", "usr_" + "0" * 16):
        reply = await public.get("/v1/email-verification", params={"token": bad})
        assert reply.status == 404, (bad, reply.text)
    assert (await me.get(f"/v1/users/{second['id']}")).body["verified"] is False

    world.clock.advance(dt.timedelta(hours=24, seconds=1))
    expired = await public.get("/v1/email-verification", params={"token": token_a})
    assert expired.status == 403 and "expired" in expired.body["detail"]
    resent = await me.post(f"/v1/users/{first['id']}/verification")
    assert resent.status == 200 and resent.body["verification_sent"] is True, resent.text
    mails = await _mails(world.smtp, "a@expiring.example", 2)
    _, fresh = _link(mails[-1])
    assert fresh != token_a
    assert (await public.get("/v1/email-verification", params={"token": token_a})).status == 404
    assert (await public.get("/v1/email-verification", params={"token": fresh})).status == 200

    other = world.client.as_(await new_tenant(operator, "outsiders"))
    assert (await other.get(f"/v1/users/{first['id']}")).status == 404
    assert (await other.post(f"/v1/users/{first['id']}/verification")).status == 404
    assert (await other.delete(f"/v1/users/{first['id']}")).status == 404
    foreign_key = await other.post("/v1/keys", {"name": "x", "user_id": first["id"]})
    assert foreign_key.status == 404, "a key cannot act for another tenant's user"


async def test_a_key_acts_for_a_user_and_the_user_stays_while_it_is_active(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    me = world.client.as_(await new_tenant(operator, "keyholders"))
    user = (await me.post("/v1/users", {"name": "K", "email": "k@keys.example"})).body
    key = await me.post("/v1/keys", {"name": "for k", "user_id": user["id"]})
    assert key.status == 201 and key.body["user_id"] == user["id"]
    blocked = await me.delete(f"/v1/users/{user['id']}")
    assert blocked.status == 409 and key.body["key_id"] in blocked.body["detail"]
    assert (await me.post(f"/v1/keys/{key.body['key_id']}/revoke")).status == 200
    assert (await me.delete(f"/v1/users/{user['id']}")).status == 204
    assert (await me.get(f"/v1/users/{user['id']}")).status == 404


async def test_users_are_listed_in_pages_without_repeats(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    me = world.client.as_(await new_tenant(operator, "paged"))
    made = set()
    for i in range(5):
        reply = await me.post("/v1/users", {"name": f"U{i}", "email": f"u{i}@paged.example"})
        made.add(reply.body["id"])
    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        page = await me.get("/v1/users", params=params)
        assert page.status == 200, page.text
        seen += [u["id"] for u in page.body["items"]]
        if page.body["next_cursor"] is None:
            break
        params["cursor"] = page.body["next_cursor"]
    assert sorted(seen) == sorted(made) and len(seen) == 5
    bad = await me.get("/v1/users", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status == 400


async def test_tenant_settings_are_validated_and_shown(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    me = world.client.as_(await new_tenant(operator, "zoned"))
    bad = await me.patch("/v1/tenant", {"timezone": "Mars/Olympus_Mons"})
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "timezone"
    many = await me.patch(
        "/v1/tenant", {"notification_emails": [f"u{i}@x.example" for i in range(21)]}
    )
    assert many.status == 422 and many.body["errors"][0]["field"] == "notification_emails"
    not_mail = await me.patch("/v1/tenant", {"notification_emails": ["not an address"]})
    assert not_mail.status == 422
    ok = await me.patch("/v1/tenant", {"timezone": "Asia/Kolkata"})
    assert ok.status == 200 and ok.body["timezone"] == "Asia/Kolkata"
    assert ok.body["notification_emails"] == []
    by_operator = await operator.patch(
        "/v1/tenants/zoned", {"notification_emails": ["A@x.example"]}
    )
    assert by_operator.status == 200 and by_operator.body["notification_emails"] == ["a@x.example"]
    assert by_operator.body["timezone"] == "Asia/Kolkata"
    assert (await operator.patch("/v1/tenants/nobody-here", {"timezone": "UTC"})).status == 404


def _bad_csv(marker: str) -> bytes:
    row = f"CALL-{marker},voice,inbound,not-a-time,,a,b,c,d,e,f,g,h\n"
    return (CSV_HEADER + row).encode()


async def _noticed(world: World, path: str, expected: list[bool], timeout: float = 60) -> None:
    """Wait until the watcher settled ``path``'s invalid versions (oldest first) as
    ``expected``: mailed or not (the flag is set once the mail went)."""
    assert world.service.cases is not None
    engine = world.service.cases.engine
    deadline = time.monotonic() + timeout
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(notified_files.c.mailed)
                    .select_from(
                        file_outcomes.join(
                            notified_files, notified_files.c.file_id == file_outcomes.c.file_id
                        )
                    )
                    .where(file_outcomes.c.path == path)
                    .order_by(file_outcomes.c.decided_at)
                )
            ).all()
        got = [bool(r.mailed) for r in rows]
        if got == expected:
            return
        assert time.monotonic() < deadline, f"notices of {path}: {got}, expected {expected}"
        await asyncio.sleep(0.3)


async def test_an_invalid_file_is_mailed_once_then_quiet_then_again(world: World) -> None:
    operator = world.client.as_(OPERATOR_TOKEN)
    set_to = await operator.patch(
        "/v1/tenants/notified", {"notification_emails": ["Ops@CRM.example", "lead@crm.example"]}
    )
    assert set_to.status == 200, set_to.text
    path = "20261120_member.csv"
    (world.inbox / path).write_bytes(_bad_csv("1"))
    [first] = await _mails(world.smtp, "ops@crm.example", 1, timeout=60)
    assert "lead@crm.example" in first["X-Envelope-To"]
    assert path in first["Subject"] and "invalid" in first["Subject"]
    text = first.get_content()
    assert f"File:         {path}" in text and "Status:       invalid" in text
    assert "column [started_at]" in text and "bad_timestamp" in text, text
    assert "Job id:" in text

    (world.inbox / path).write_bytes(_bad_csv("22"))  # the same path fails again
    await _noticed(world, path, [True, False])
    assert len(world.smtp.to("ops@crm.example")) == 1, "quiet period: nothing more sent"

    world.clock.advance(dt.timedelta(hours=24, minutes=1))
    (world.inbox / path).write_bytes(_bad_csv("333"))
    mails = await _mails(world.smtp, "ops@crm.example", 2, timeout=60)
    assert path in mails[-1]["Subject"]
    await _noticed(world, path, [True, False, True])
