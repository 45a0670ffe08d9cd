"""Stored reports through the running service: signed links download the file, a tampered or
expired link gets 403, another tenant never sees a report; the same store on S3."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from servers.s3 import S3Server
from support import running, settings_for

from streams.clock import ManualClock
from streams.codec import AvroCodec
from streams.control.secrets import SecretBox
from streams.db import Database
from streams.exports.links import LinkSigner
from streams.exports.report import ReportFile, ReportParams, build_report
from streams.exports.storage import ReportStore, purge_expired, report_files
from streams.media_s3 import S3MediaStore
from streams.settings import S3MediaSettings, Settings

START = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)


async def built_files(engine, settings: Settings, tenant: str, tmp: Path) -> list[ReportFile]:
    """A CSV and an Excel report of the tenant (no results yet: header-only files)."""
    out = []
    for fmt in ("csv", "xlsx"):
        built = await build_report(
            engine,
            AvroCodec(),
            settings,
            tenant,
            ReportParams(format=fmt, columns=["case_id", "agent", "passed"]),
            now=START,
            tz=ZoneInfo("UTC"),
            out_dir=tmp / fmt,
            base_name=f"{tenant}-quality",
            rows_per_file=[None],
        )
        out += built.layouts[None]
    return out


def relative(url: str) -> str:
    split = urlsplit(url)
    return f"{split.path}?{split.query}"


def with_query(url: str, **changes: str | None) -> str:
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    for k, v in changes.items():
        if v is None:
            query.pop(k, None)
        else:
            query[k] = v
    return f"{split.path}?{urlencode(query)}"


async def test_signed_links_download_until_they_expire(kafka: str, tmp_path: Path) -> None:
    settings = settings_for(
        kafka,
        "rptapi",
        tmp_path / "data",
        [],
        api={"operator_token": OPERATOR_TOKEN},
        processors={"enabled": False},
    )
    clock = ManualClock(START)
    async with running(settings, clock=clock) as service, ApiClient(service.http_url or "") as c:
        operator = c.as_(OPERATOR_TOKEN)
        ours = c.as_(await new_tenant(operator, "rep-a"))
        theirs = c.as_(await new_tenant(operator, "rep-b"))
        engine = service.state.engine
        store = ReportStore.from_settings(
            service.settings, service.secrets, service.http_url or "", service.media
        )
        files = await built_files(engine, service.settings, "rep-a", tmp_path)
        saved = await store.save(
            engine, "rep-a", files, execution_id="exe_0001", now=clock.now(), ttl=WEEK
        )
        assert [s.name for s in saved] == ["rep-a-quality.csv", "rep-a-quality.xlsx"]
        csv_report, xlsx_report = saved
        assert csv_report.expires_at == START + WEEK and csv_report.url is not None

        # Anyone holding the link downloads the file, no API key needed.
        got = await c.get(relative(csv_report.url))
        assert got.status == 200, got.text
        assert got.text.encode() == files[0].path.read_bytes() == b"case_id,agent,passed\r\n"
        assert got.headers["Content-Type"].startswith("text/csv")
        assert got.headers["Content-Disposition"] == 'attachment; filename="rep-a-quality.csv"'
        assert got.headers["Content-Length"] == str(files[0].bytes)
        assert xlsx_report.url is not None
        async with aiohttp.ClientSession() as session, session.get(xlsx_report.url) as xlsx:
            assert xlsx.status == 200 and "spreadsheetml" in xlsx.headers["Content-Type"]
            assert await xlsx.read() == files[1].path.read_bytes()

        # Tampered, incomplete or forged links: 403 before any lookup (ids cannot be probed).
        url = csv_report.url
        signature = parse_qs(urlsplit(url).query)["signature"][0]
        later = str(int((START + 30 * WEEK).timestamp()))
        forged = url.replace(csv_report.id, "rpt_" + "0" * 24)
        for bad in (
            with_query(url, signature=("1" if signature[0] == "0" else "0") + signature[1:]),
            with_query(url, expires=later),
            with_query(url, signature=None),
            with_query(url, expires=None),
            with_query(url, signature=None, expires=None),
            relative(forged),
        ):
            reply = await c.get(bad)
            assert reply.status == 403, (bad, reply.status, reply.text)
            assert reply.content_type == "application/problem+json"
        # What no report id can be never reaches the handler: 404.
        traversal = await c.get(relative(url.replace(csv_report.id, "..%2F..%2Fsecret.key")))
        assert traversal.status == 404 and traversal.content_type == "application/problem+json"
        # A genuine signature for an id that was never stored: 404.
        unknown = store.links.url("http://x", "rpt_" + "f" * 24, START + WEEK)
        assert (await c.get(relative(unknown))).status == 404
        document = (await c.get("/v1/openapi.json")).body
        assert {"/v1/reports", "/v1/reports/{report_id}"} <= set(document["paths"])
        # The GET route does not swallow other methods on the same path.
        assert (await ours.post(f"/v1/reports/{csv_report.id}", {})).status == 405

        # The tenant's list: newest first, fresh links; the other tenant sees nothing.
        # (both were saved at the same time: newest first, then by id, descending)
        newest, older = sorted([csv_report.id, xlsx_report.id], reverse=True)
        listed = await ours.get("/v1/reports", params={"limit": "1"})
        assert listed.status == 200, listed.text
        assert [i["id"] for i in listed.body["items"]] == [newest]
        page2 = await ours.get("/v1/reports", params={"cursor": listed.body["next_cursor"]})
        assert [i["id"] for i in page2.body["items"]] == [older]
        fresh = page2.body["items"][0]["url"]
        async with aiohttp.ClientSession() as session, session.get(fresh) as response:
            assert response.status == 200  # (a CSV or an Excel file: not read as text)
        spoofed = await ours.get("/v1/reports", headers={"Host": "evil.example"})
        assert all(
            i["url"].startswith(f"{service.http_url}/v1/reports/rpt_")
            for i in spoofed.body["items"]
        )
        by_run = await ours.get("/v1/reports", params={"execution_id": "exe_0001"})
        assert len(by_run.body["items"]) == 2
        assert (await theirs.get("/v1/reports")).body["items"] == []
        assert (await theirs.get(f"/v1/reports/{csv_report.id}/link")).status == 404
        link = await ours.get(f"/v1/reports/{csv_report.id}/link")
        assert link.status == 200 and link.body["rows"] == 0 and link.body["format"] == "csv"
        assert (await c.get(f"/v1/reports/{csv_report.id}/link")).status == 401

        # Seven days and a second later: every link answers 403; the list shows no link.
        clock.advance(WEEK - dt.timedelta(seconds=1))
        assert (await c.get(relative(url))).status == 200
        clock.advance(dt.timedelta(seconds=2))
        for link_url in (url, fresh):
            expired = await c.get(relative(link_url))
            assert expired.status == 403 and "expired" in expired.body["detail"]
        assert [i["url"] for i in (await ours.get("/v1/reports")).body["items"]] == [None, None]

        # The retention clean-up deletes the files and their rows.
        stored = list((tmp_path / "data" / "media" / "reports" / "rep-a").rglob("*.*"))
        assert len(stored) == 2
        assert await purge_expired(engine, store, clock.now()) == 2
        assert not any(p.exists() for p in stored)
        assert (await ours.get("/v1/reports")).body["items"] == []
        assert await service.state.count_rows(report_files) == 0


async def test_reports_on_s3_stream_back_and_are_purged(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, database_url: str
) -> None:

    media = S3MediaStore(
        S3MediaSettings(
            bucket=s3_bucket,
            endpoint_url=s3_server.endpoint_url,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,
            addressing_style="path",
            prefix="media",
        )
    )
    box = SecretBox.from_settings([], tmp_path)
    store = ReportStore(media, LinkSigner.from_secrets(box), "https://cs.example.com")
    big = tmp_path / "big.csv"
    big.write_bytes(b"case_id\n" + b"x" * 1_000_000)
    files = [ReportFile(big, "acme-big.csv", 1, big.stat().st_size, "text/csv; charset=utf-8")]
    async with Database(database_url) as db:
        (saved,) = await store.save(
            db.engine, "acme", files, execution_id=None, now=START, ttl=WEEK
        )
        assert saved.url is not None and saved.url.startswith(
            "https://cs.example.com/v1/reports/rpt_"
        )
        key = f"media/reports/acme/{saved.id}/acme-big.csv"
        assert (
            s3_server.client().head_object(Bucket=s3_bucket, Key=key)["ContentLength"]
            == big.stat().st_size
        )
        chunks = [c async for c in await store.open(f"reports/acme/{saved.id}/acme-big.csv")]
        assert len(chunks) > 1 and b"".join(chunks) == big.read_bytes()
        assert await purge_expired(db.engine, store, START + WEEK - dt.timedelta(seconds=1)) == 0
        assert await purge_expired(db.engine, store, START + WEEK) == 1
        listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="media/reports/")
        assert listed.get("KeyCount", 0) == 0
        with pytest.raises(FileNotFoundError):
            await store.open(f"reports/acme/{saved.id}/acme-big.csv")
