"""Source types (seed 002) end to end: schema API, files over SFTP, source records, job status.

The whole service runs in-process against the real broker, OpenSSH sftp server and PostgreSQL;
the schema is created and the job status read through its /v1 API.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    TopicReader,
    connector,
    publish,
    running,
    settings_for,
    sftp_config,
    sftp_session,
    upload,
)

from streams.service import Service
from streams.topics import Topics

pytestmark = pytest.mark.usefixtures("clean_upload")

RECORD = "callstream.SourceRecord"
OUTCOME = "callstream.FileOutcome"
DEAD = "callstream.DeadLetter"
ARRIVAL = "callstream.FileArrival"

MEMBER = {
    "source_name": "Member",
    "description": "Member's information and personal details",
    "schema": [
        {"name": "id", "type": "Integer", "primary_key": True},
        {"name": "name", "type": "String"},
        {"name": "birthdate", "type": "Date"},
        {"name": "phone", "type": "String", "pii": True},
        {"name": "email", "type": "String", "pii": True},
        {"name": "points", "type": "Decimal"},
        {"name": "vip", "type": "Boolean"},
        {"name": "joined_at", "type": "DateTime"},
    ],
}
HEADER = b"id,name,birthdate,phone,email,points,vip,joined_at\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Flow:
    """The running service, an API client with acme's key, and readers of its topics."""

    def __init__(self, service: Service, api: ApiClient, kafka: str, topics: Topics) -> None:
        self.service = service
        self.api = api
        self.records = TopicReader(kafka, topics.source_records, RECORD)
        self.outcomes = TopicReader(kafka, topics.file_outcomes, OUTCOME)
        self.dead = TopicReader(kafka, topics.dead_letter, DEAD)
        self.arrivals = TopicReader(kafka, topics.file_arrivals, ARRIVAL)

    async def outcome(self, path: str, count: int = 1) -> dict[str, Any]:
        """Wait for the ``count``-th outcome of ``path`` and return it."""

        def seen(rs: list[dict[str, Any]]) -> bool:
            return sum(r["path"] == path for r in rs) >= count

        await self.outcomes.wait_for(seen, 60)
        return [r for r in self.outcomes.records if r["path"] == path][count - 1]

    async def job(self, date: str, source_type: str = "member") -> Any:
        return await self.api.get(f"/v1/acme/sources/{source_type}/job", params={"date": date})

    def close(self) -> None:
        for reader in (self.records, self.outcomes, self.dead, self.arrivals):
            reader.close()


@pytest.fixture
async def flow(
    kafka: str, prefix: str, sftp_server: SftpServer, tmp_path: Path, pg_server: PostgresServer
) -> AsyncIterator[Flow]:
    pg_server.reset()
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        [connector("crm", sftp_config(sftp_server))],
        database_url=pg_server.async_url(),
        api={"operator_token": OPERATOR_TOKEN},
    )
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        key = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "crm"})
        assert key.status == 201, key.text
        flow = Flow(service, client.as_(key.body["key"]), kafka, Topics(prefix))
        created = await flow.api.patch("/v1/acme/sources/member/schema", MEMBER)
        assert created.status == 200, created.text
        try:
            yield flow
        finally:
            flow.close()


async def test_a_members_file_becomes_source_records_with_hashed_pii(
    flow: Flow, sftp_server: SftpServer
) -> None:
    path = "sources/member/20200125_member.csv"
    with sftp_session(sftp_server) as sftp:
        upload(
            sftp,
            path,
            HEADER
            + b"1,Ann Lee,1990-05-01,+65 9123 4567, Ann@Example.COM ,10.50,yes,"
            + b"2020-01-25T10:00:00Z\n"
            + b"2,Bob,,,,,,\n"
            + b"3,Cy,1985/12/31,123,cy@example.com,0,0,2020-01-25 18:00:00+08:00\n",
        )
    outcome = await flow.outcome(path)
    assert (outcome["outcome"], outcome["rows_accepted"]) == ("processed", 3)
    assert outcome["records_by_change"] == {"created": 3}
    await flow.records.wait_for(lambda rs: len(rs) >= 3, 30)
    by_key = {r["primary_key"]: r for r in flow.records.records}
    ann = by_key["1"]
    assert ann["tenant"] == "acme" and ann["source_type"] == "member"
    assert ann["change"] == "created" and ann["schema_version"] == 1
    assert str(ann["date"]) == "2020-01-25"
    assert ann["values"] == {
        "id": "1",
        "name": "Ann Lee",
        "birthdate": "1990-05-01",
        "phone": sha("+65 9123 4567"),
        "email": sha("ann@example.com"),
        "points": "10.5",
        "vip": "true",
        "joined_at": "2020-01-25T10:00:00Z",
    }
    assert by_key["2"]["values"]["phone"] is None
    assert by_key["3"]["values"]["joined_at"] == "2020-01-25T10:00:00Z"
    everything = repr(flow.records.records)
    assert "9123" not in everything and "Example.COM" not in everything
    job = await flow.job("20200125")
    assert job.status == 200, job.text
    assert job.body["status"] == "success" and job.body["error_msg"] is None
    assert job.body["file_name"] == "20200125_member.csv"
    assert job.body["job_id"] == outcome["file_id"]
    assert job.body["source_name"] == "Member"
    assert isinstance(job.body["process_time"], int)
    assert job.body["records_created"] == 3
    # another tenant sees none of it
    other = flow.api.as_(await new_tenant(flow.api.as_(OPERATOR_TOKEN), "globex"))
    for url in ("/v1/acme/sources/member/job", "/v1/globex/sources/member/job"):
        denied = await other.get(url, params={"date": "20200125"})
        assert denied.status == 404
        assert "Ann" not in denied.text and outcome["file_id"] not in denied.text


async def test_a_reupload_counts_updates_and_deletes_and_a_redelivery_counts_nothing(
    flow: Flow, sftp_server: SftpServer
) -> None:
    path = "sources/member/20200126_member.csv"
    with sftp_session(sftp_server) as sftp:
        upload(sftp, path, HEADER + b"1,Ann,,,,,,\n2,Bob,,,,,,\n3,Cy,,,,,,\n", mtime=1_600_000_000)
    await flow.outcome(path)
    await flow.records.wait_for(lambda rs: len(rs) >= 3, 30)
    with sftp_session(sftp_server) as sftp:  # the same name again, rows changed
        upload(
            sftp,
            path,
            HEADER + b"1,Ann,,,,,,\n2,Bob Changed,,,,,,\n4,Dee,,,,,,\n",
            mtime=1_600_000_100,
        )
    second = await flow.outcome(path, 2)
    assert second["outcome"] == "processed"
    assert second["records_by_change"] == {
        "unchanged": 1,
        "updated": 1,
        "created": 1,
        "deleted": 1,
    }
    await flow.records.wait_for(lambda rs: len(rs) >= 6, 30)
    later = [(r["primary_key"], r["change"]) for r in flow.records.records[3:]]
    assert sorted(later) == [("2", "updated"), ("3", "deleted"), ("4", "created")]
    tombstone = next(r for r in flow.records.records if r["change"] == "deleted")
    assert tombstone["values"] == {} and tombstone["content_hash"] is None
    job = await flow.job("20200126")
    assert job.body["job_id"] == second["file_id"]
    counts = {k: job.body[f"records_{k}"] for k in ("created", "updated", "unchanged", "deleted")}
    assert counts == {"created": 1, "updated": 1, "unchanged": 1, "deleted": 1}
    metrics = await flow.api.get("/metrics")
    assert 'change="updated",connector="crm",tenant="acme"} 1.0' in metrics.text
    # the broker delivers the second version's arrival again: nothing is counted twice
    await flow.arrivals.wait_for(lambda rs: any(r["file_id"] == second["file_id"] for r in rs), 30)
    arrival = next(r for r in flow.arrivals.records if r["file_id"] == second["file_id"])
    publish(
        flow.service.settings.kafka.bootstrap_servers,
        flow.service.topics.file_arrivals,
        ARRIVAL,
        f"acme/crm/{path}",
        arrival,
    )
    await flow.outcome(path, 3)
    flow.records.poll(2)
    assert len(flow.records.records) == 6
    again = await flow.job("20200126")
    assert again.body == job.body


async def test_misplaced_files_are_recorded_and_never_read(
    flow: Flow, sftp_server: SftpServer
) -> None:
    misplaced = [
        "sources/member/20201341_member.csv",  # no such date
        "sources/order/20200125_member.csv",  # folder and name disagree
        "sources/member/20200125_member.xlsx",  # wrong extension
        "sources/20200125_member.csv",  # not in a type's folder
        "sources/order/20200125_order.csv",  # no schema for 'order'
    ]
    with sftp_session(sftp_server) as sftp:
        for path in misplaced:
            upload(sftp, path, HEADER + b"1,Ann,,,,,,\n")
    for path in misplaced:
        outcome = await flow.outcome(path)
        assert (outcome["outcome"], outcome["reason"]) == ("invalid", "misplaced"), path
        assert outcome["rows_accepted"] == 0
    await flow.dead.wait_for(lambda rs: len(rs) >= len(misplaced), 30)
    reasons = {r["path"]: (r["reason"], r["message"]) for r in flow.dead.records}
    assert reasons["sources/member/20201341_member.csv"][0] == "misplaced"
    assert "20201341 is not a date" in reasons["sources/member/20201341_member.csv"][1]
    assert "no schema" in reasons["sources/order/20200125_order.csv"][1]
    flow.records.poll(1)
    assert flow.records.records == []
    assert (await flow.job("20201341")).status == 422
    assert (await flow.job("20200125")).status == 404
    metrics = await flow.api.get("/metrics")
    assert (
        'callstream_records_rejected_total{connector="crm",reason="misplaced",tenant="acme"} 5.0'
        in metrics.text
    )


async def test_a_bad_value_rejects_its_row_naming_the_column_and_fails_the_job(
    flow: Flow, sftp_server: SftpServer
) -> None:
    path = "sources/member/20200127_member.csv"
    with sftp_session(sftp_server) as sftp:
        upload(
            sftp,
            path,
            HEADER
            + b"1,Ann,,,,,,\n2,Bob,1990-13-01,+65 8000 1111,,,,\n3,Cy,,,,,maybe,\n"
            + b"1,Ann again,,,,,,\n",
        )
    outcome = await flow.outcome(path)
    assert outcome["outcome"] == "partial"
    assert outcome["rows_accepted"] == 1
    assert outcome["rejected_by_reason"] == {"invalid_value": 2, "duplicate_key": 1}
    await flow.dead.wait_for(lambda rs: len(rs) >= 3, 30)
    dead = sorted(flow.dead.records, key=lambda r: r["row"])
    assert [(r["row"], r["column"], r["reason"]) for r in dead] == [
        (2, "birthdate", "invalid_value"),
        (3, "vip", "invalid_value"),
        (4, "id", "duplicate_key"),
    ]
    # the rejected row keeps no PII in clear: its phone is the digest a replay would compute
    assert dead[0]["raw"] == f"2,Bob,1990-13-01,{sha('+65 8000 1111')},,,,\n".encode()
    assert "8000" not in (dead[0]["excerpt"] or "")
    await flow.records.wait_for(lambda rs: len(rs) >= 1, 30)
    assert [r["primary_key"] for r in flow.records.records] == ["1"]
    job = await flow.job("20200127")
    assert job.body["status"] == "failed"
    assert job.body["error_msg"] == "Invalid data type in column [birthdate]: expected Date"


async def test_whole_file_rejections_fail_the_job_with_the_reason(
    flow: Flow, sftp_server: SftpServer
) -> None:
    with sftp_session(sftp_server) as sftp:
        upload(sftp, "sources/member/20200128_member.csv", b"\xef\xbb\xbf" + HEADER)
        upload(sftp, "sources/member/20200129_member.tsv", b"id\tname\tnickname\n1\tAnn\tA\n")
    bom = await flow.outcome("sources/member/20200128_member.csv")
    assert (bom["outcome"], bom["reason"]) == ("invalid", "bom_not_allowed")
    header = await flow.outcome("sources/member/20200129_member.tsv")
    assert (header["outcome"], header["reason"]) == ("invalid", "header_mismatch")
    job = await flow.job("20200129")
    assert job.body["status"] == "failed"
    assert (
        "missing column(s) [birthdate, phone, email, points, vip, joined_at]"
        in (job.body["error_msg"])
    )
    assert "unexpected column(s) [nickname]" in job.body["error_msg"]
    assert "without BOM" in (await flow.job("20200128")).body["error_msg"]


async def test_schema_changes_are_versioned_and_a_removed_field_is_refused(flow: Flow) -> None:
    url = "/v1/acme/sources/member/schema"
    removed = {**MEMBER, "schema": MEMBER["schema"][:-1]}
    refused = await flow.api.patch(url, removed)
    assert refused.status == 409
    assert refused.content_type == "application/problem+json"
    assert "field 'joined_at' is removed" in refused.body["detail"]
    retyped = {**MEMBER, "schema": [*MEMBER["schema"][:-1], {"name": "joined_at", "type": "Date"}]}
    assert "'joined_at' changes type" in (await flow.api.patch(url, retyped)).body["detail"]
    added = {
        **MEMBER,
        "source_name": "MemberV2",
        "schema": [*MEMBER["schema"], {"name": "tier", "type": "String"}],
    }
    changed = await flow.api.patch(url, added)
    assert changed.status == 200
    assert (changed.body["version"], changed.body["source_name"]) == (2, "MemberV2")
    got = await flow.api.get(url)
    assert got.body == changed.body
    assert got.body["created_at"] <= got.body["updated_at"]
    versions = await flow.api.get(url + "/versions")
    assert [v["version"] for v in versions.body["items"]] == [1, 2]
