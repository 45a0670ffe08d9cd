"""Export jobs end to end through the running service: real OpenSSH sftp, moto S3, aiosmtpd.

2,500 analysis results of the report's day are written by the case store; export jobs deliver
CSV and Excel to SFTP and S3 (read back with ``csv`` and ``openpyxl``: selected columns, the
team filter, a formula-looking agent kept as text), an e-mail export mails 3 links of
1,000/1,000/500 rows that answer 403 after 7 days, one destination down is partial success,
both down is delivery failed, an unreachable source is handler failed, and "email me" goes only
to the calling user's verified address.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import openpyxl
import pytest
import pytest_asyncio
from api_support import OPERATOR_TOKEN, ApiClient, s3_target, sftp_target
from fixtures import mail_settings
from servers.s3 import S3Server
from servers.smtp import SmtpServer
from servers.sshd import SftpServer
from support import conversation_record, running, seed_results, settings_for, unique_prefix

from streams.clock import ManualClock

pytestmark = pytest.mark.asyncio(loop_scope="module")

UTC = dt.UTC
DAY = dt.datetime(2026, 11, 22, tzinfo=UTC)
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
EVIL = '=HYPERLINK("http://evil.example/","click")'
ROWS = 2_500
COLUMNS = ["case_id", "external_interaction_id", "agent", "team", "overall_score", "passed"]


@dataclass
class World:
    client: ApiClient
    me: ApiClient
    clock: ManualClock
    smtp: SmtpServer
    sftp: SftpServer
    s3: S3Server
    bucket: str
    dest: dict[str, str]


def _records() -> Iterator[dict[str, Any]]:
    """2,500 conversations of ``DAY`` for acme; one agent looks like a formula; teams
    alternate red / blue."""
    for i in range(ROWS):
        yield conversation_record(
            f"EXP-{i:05d}",
            channel="chat",
            agent_id=EVIL if i == 0 else f"agent-{i % 7}",
            team="red" if i % 2 == 0 else "blue",
            started_at=DAY + dt.timedelta(hours=8),
            turns=[{"speaker": "agent", "at": None, "text": "Hello, how can I help?"}],
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    kafka: str,
    sftp_server: SftpServer,
    s3_server: S3Server,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    settings = settings_for(
        kafka,
        unique_prefix(),
        tmp_path_factory.mktemp("exportjobs"),
        [],
        api={"operator_token": OPERATOR_TOKEN, "connect_allow": ["127.0.0.1/32"]},
        mail=mail_settings(smtp_server),
        scheduler={"tick_seconds": 0.2},
    )
    bucket = s3_server.create_bucket()
    clock = ManualClock(NOW)
    await seed_results(settings, _records(), analysed_at=DAY + dt.timedelta(hours=10))
    async with running(settings, clock) as service, ApiClient(service.http_url or "") as client:
        key = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "t"})
        me = client.as_(key.body["key"])
        dest = {}
        for name, config in (
            ("sftp", sftp_target(sftp_server, connect_timeout_seconds=5)),
            ("s3", s3_target(s3_server, bucket)),
            ("mail", {"type": "email", "to": ["quality@acme.example"]}),
            ("sftp-down", sftp_target(sftp_server, port=1, connect_timeout_seconds=2)),
            ("s3-down", s3_target(s3_server, "no-such-bucket-" + uuid.uuid4().hex[:8])),
        ):
            made = await me.post("/v1/export-connectors", {"name": name, "config": config})
            assert made.status == 201, made.text
            dest[name] = made.body["id"]
        yield World(client, me, clock, smtp_server, sftp_server, s3_server, bucket, dest)
    s3_server.delete_bucket(bucket)


async def run_job(w: World, name: str, connectors: list[str], report: dict[str, Any]) -> Any:
    """Create an export job, trigger it, wait for its run to end; return the run."""
    job = await w.me.post(
        "/v1/jobs",
        {
            "name": name,
            "type": "data_export",
            "connectors": connectors,
            "frequency": "daily",
            "time": "06:00",
            "report": report,
        },
    )
    assert job.status == 201, job.text
    run = await w.me.post(f"/v1/jobs/{job.body['id']}/trigger")
    assert run.status == 202, run.text
    deadline = time.monotonic() + 120
    while True:
        got = await w.me.get(f"/v1/executions/{run.body['id']}")
        if got.body["status"] not in ("pending", "processing", "delivering"):
            return got.body
        assert time.monotonic() < deadline, got.body
        await asyncio.sleep(0.2)


def s3_object(w: World, key: str) -> bytes:
    s3 = boto3.client(
        "s3",
        endpoint_url=w.s3.endpoint_url,
        aws_access_key_id=w.s3.access_key_id,
        aws_secret_access_key=w.s3.secret_access_key,
        region_name="us-east-1",
    )
    return bytes(s3.get_object(Bucket=w.bucket, Key=key)["Body"].read())


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


@pytest.mark.usefixtures("clean_upload")
async def test_csv_and_excel_reach_sftp_and_s3_with_columns_filters_and_formulas_as_text(
    world: World,
) -> None:
    w = world
    report = {"columns": COLUMNS, "team": "red", "format": "csv"}
    run = await run_job(w, "red team csv", [w.dest["sftp"], w.dest["s3"]], report)
    assert run["status"] == "success", run
    assert run["counts"]["rows_exported"] == ROWS // 2
    [name] = run["deliveries"][0]["delivered"]
    assert name.endswith(".csv")
    on_sftp = (w.sftp.upload_dir("cs_pw") / name).read_bytes()
    on_s3 = s3_object(w, f"reports/daily/{name}")
    assert on_sftp == on_s3
    rows = csv_rows(on_sftp)
    assert rows[0] == COLUMNS
    assert len(rows) == 1 + ROWS // 2
    assert {r[3] for r in rows[1:]} == {"red"}
    evil = [r for r in rows[1:] if r[1] == "EXP-00000"]
    assert evil[0][2] == "'" + EVIL  # neutralised: a spreadsheet shows it, never runs it

    report = {"columns": COLUMNS, "team": "red", "format": "xlsx"}
    run = await run_job(w, "red team xlsx", [w.dest["s3"]], report)
    assert run["status"] == "success", run
    [name] = run["deliveries"][0]["delivered"]
    book = openpyxl.load_workbook(io.BytesIO(s3_object(w, f"reports/daily/{name}")))
    sheet = book.active
    table = list(sheet.iter_rows(values_only=True))
    assert list(table[0]) == COLUMNS and len(table) == 1 + ROWS // 2
    cell = next(row[2] for row in sheet.iter_rows(min_row=2) if row[1].value == "EXP-00000")
    assert cell.value == EVIL and cell.data_type == "s"  # a string, not a formula


async def test_an_email_export_of_2500_rows_mails_three_links_that_expire(world: World) -> None:
    w = world
    run = await run_job(w, "everything by mail", [w.dest["mail"]], {"columns": COLUMNS})
    assert run["status"] == "success", run
    mail = w.smtp.wait_for(lambda m: "everything by mail" in m["Subject"])[0]
    assert mail["X-Envelope-To"] == "quality@acme.example"
    assert not any(part.get_filename() for part in mail.walk())  # links, never attachments
    links = re.findall(r"https?://\S+/v1/reports/rpt_\w+\?\S+", mail.get_content())
    assert len(links) == 3
    assert sorted(r["url"] for r in run["reports"]) == sorted(links)  # the same, in the history
    async with aiohttp.ClientSession() as http:
        sizes = []
        for link in links:
            async with http.get(link) as resp:
                assert resp.status == 200
                sizes.append(len(csv_rows(await resp.read())) - 1)
        assert sorted(sizes) == [500, 1000, 1000]
        w.clock.set(NOW + dt.timedelta(days=7, minutes=1))
        try:
            for link in links:
                async with http.get(link) as resp:
                    assert resp.status == 403
        finally:
            w.clock.set(NOW)


async def test_destination_failures_are_partial_or_delivery_failed_and_a_bad_source_handler_failed(
    world: World,
) -> None:
    w = world
    report = {"columns": ["case_id"], "team": "blue"}
    partial = await run_job(w, "one down", [w.dest["sftp-down"], w.dest["s3"]], report)
    assert partial["status"] == "partial_success", partial
    by_name = {d["name"]: d for d in partial["deliveries"]}
    assert by_name["s3"]["ok"] and not by_name["sftp-down"]["ok"]
    assert "sftp-down" in partial["error"]
    down = await run_job(w, "both down", [w.dest["sftp-down"], w.dest["s3-down"]], report)
    assert down["status"] == "delivery_failed", down
    assert all(d["error"] for d in down["deliveries"])

    source = await w.me.post(
        "/v1/connectors",
        {"name": "gone", "store": s3_target(w.s3, "no-such-source-" + uuid.uuid4().hex[:8])},
    )
    assert source.status == 201, source.text
    job = await w.me.post(
        "/v1/jobs",
        {
            "name": "unreachable import",
            "type": "data_import",
            "connectors": [source.body["id"]],
            "frequency": "daily",
        },
    )
    assert job.status == 201, job.text
    await asyncio.sleep(1.5)  # the runner starts the connector
    run = await w.me.post(f"/v1/jobs/{job.body['id']}/trigger")
    deadline = time.monotonic() + 60
    while (got := await w.me.get(f"/v1/executions/{run.body['id']}")).body["status"] in (
        "pending",
        "processing",
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert got.body["status"] == "handler_failed", got.body
    assert "could not be read" in got.body["error"]
    failed = await w.me.get("/v1/executions", params={"status": "handler_failed"})
    assert run.body["id"] in [r["id"] for r in failed.body["items"]]


async def test_email_me_goes_only_to_the_callers_verified_address(world: World) -> None:
    w = world
    user = await w.me.post("/v1/users", {"name": "Quinn", "email": "quinn@acme.example"})
    assert user.status == 201, user.text
    key = await w.client.as_(OPERATOR_TOKEN).post(
        "/v1/tenants/acme/keys", {"name": "quinn", "user_id": user.body["id"]}
    )
    assert key.status == 201, key.text
    quinn = w.client.as_(key.body["key"])
    body = {"columns": ["case_id", "agent"], "agent": "agent-3"}
    early = await quinn.post("/v1/reports/email-me", body)
    assert early.status == 403, early.text  # not verified yet

    verify = w.smtp.wait_for(lambda m: m["X-Envelope-To"] == "quinn@acme.example")[0]
    [link] = re.findall(r"https?://\S+/v1/email-verification\?token=\S+", verify.get_content())
    async with aiohttp.ClientSession() as http, http.get(link) as resp:
        assert resp.status == 200

    sent = await quinn.post("/v1/reports/email-me", body)
    assert sent.status == 202, sent.text
    assert sent.body["sent_to"] == "quinn@acme.example" and sent.body["mail_sent"]
    mails = w.smtp.wait_for(
        lambda m: m["X-Envelope-To"] == "quinn@acme.example" and "report" in m["Subject"]
    )
    assert len(re.findall(r"/v1/reports/rpt_\w+\?", mails[0].get_content())) == 1
    assert sent.body["rows"] == len([i for i in range(ROWS) if i and i % 7 == 3])

    elsewhere = await quinn.post("/v1/reports/email-me", body | {"to": "thief@evil.example"})
    assert elsewhere.status == 422, elsewhere.text
    no_user = await w.me.post("/v1/reports/email-me", body)
    assert no_user.status == 403, no_user.text
