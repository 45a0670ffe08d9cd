"""The S3 connector against moto's S3 server and a real Kafka broker, end to end.

Each test runs the service in-process (connector runner, producer, state store, and the
processors where clean-up needs their verdicts) with its own topic prefix and bucket, uploads
objects with boto3 as a tenant would, and reads what a downstream consumer would read from the
file-arrivals topic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_support import OPERATOR_TOKEN
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port
from servers.s3 import S3Server
from support import (
    CSV_HEADER,
    TopicReader,
    arrival_topics,
    connector,
    conversation_row,
    running,
    running_connectors,
    s3_config,
    settings_for,
)

from connectors.s3 import MTIME_METADATA
from streams.service import Service
from streams.settings import load_settings
from streams.topics import Topics

MiB = 1024 * 1024
NO_PROCESSORS = {"enabled": False}  # the tests that only watch announcements


def _by_path(records: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [r for r in records if r["path"] == path]


async def _metrics(service: Service) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/metrics") as resp:
        return await resp.text()


async def test_an_uploaded_object_is_announced_once_with_size_and_etag(
    kafka: str, prefix: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_server.client()
    data = (CSV_HEADER + conversation_row(1)).encode() * 3
    key = "exports/daily/2026-11-20_conversations.csv"
    client.put_object(Bucket=s3_bucket, Key=key, Body=data)
    client.put_object(Bucket=s3_bucket, Key="exports/daily/", Body=b"")  # a console "folder"
    head = client.head_object(Bucket=s3_bucket, Key=key)
    config = s3_config(s3_server, s3_bucket, prefix="exports")
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        [connector("s3-daily", config)],
        processors=NO_PROCESSORS,
        api={"operator_token": OPERATOR_TOKEN},
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings) as service:
            await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1.5)  # several more polls
            await asyncio.to_thread(reader.poll, 0.5)
            status = await running_connectors(service)
    finally:
        reader.close()
    assert len(reader.records) == 1, reader.records
    event = reader.records[0]
    assert (event["tenant"], event["connector"], event["store_type"]) == ("acme", "s3-daily", "s3")
    assert event["path"] == "daily/2026-11-20_conversations.csv"
    assert event["size"] == len(data)
    assert event["checksum"] == head["ETag"].strip('"')
    assert event["mtime"] == head["LastModified"].astimezone(dt.UTC)
    assert event["version"] == 1
    assert event["store_uri"] == f"s3://{s3_bucket}/exports/ (endpoint {s3_server.endpoint_url})"
    secret = s3_server.secret_access_key
    assert secret not in str(event) and secret not in str(status)
    assert status[0]["store"] == event["store_uri"]


async def test_an_overwrite_with_new_content_is_a_new_version(
    kafka: str, prefix: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_server.client()
    key = "meta/20201012-140253_joe.xml"
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        [connector("s3", s3_config(s3_server, s3_bucket, prefix="meta"))],
        processors=NO_PROCESSORS,
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings):
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"<call><stage>open</stage></call>")
            await reader.wait_for(lambda rs: len(rs) >= 1)
            # The CRM updates the metadata: same name, new content.
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"<call><stage>won</stage></call>")
            await reader.wait_for(lambda rs: len(rs) >= 2)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(reader.poll, 0.3)
    finally:
        reader.close()
    events = _by_path(reader.records, "20201012-140253_joe.xml")
    assert [e["version"] for e in events] == [1, 2]
    assert events[0]["checksum"] != events[1]["checksum"]
    assert events[0]["version_id"] != events[1]["version_id"]
    assert events[0]["file_id"] != events[1]["file_id"]
    assert events[1]["size"] == len(b"<call><stage>won</stage></call>")


async def test_a_multipart_upload_is_announced_only_once_complete(
    kafka: str, prefix: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_server.client()
    key = "recordings/20261120-090000_joe.wav"
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        [connector("s3", s3_config(s3_server, s3_bucket, prefix="recordings"))],
        processors=NO_PROCESSORS,
    )
    reader = TopicReader(kafka, arrival_topics(prefix))  # 10 MiB: the bulk lane's
    parts = [b"R" * (5 * MiB), b"S" * (5 * MiB), b"tail"]
    try:
        async with running(settings):
            upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
            done = []
            for n, body in enumerate(parts, start=1):
                part = client.upload_part(
                    Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=n, Body=body
                )
                done.append({"ETag": part["ETag"], "PartNumber": n})
                await asyncio.sleep(1)  # several polls with the upload unfinished
            # A small object uploaded meanwhile is announced: the connector is polling.
            client.put_object(Bucket=s3_bucket, Key="recordings/other.csv", Body=b"id\n1\n")
            await reader.wait_for(lambda rs: len(rs) >= 1)
            await asyncio.sleep(1)
            await asyncio.to_thread(reader.poll, 0.3)
            assert [r["path"] for r in reader.records] == ["other.csv"]
            client.complete_multipart_upload(
                Bucket=s3_bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
            await reader.wait_for(lambda rs: len(rs) >= 2)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(reader.poll, 0.3)
    finally:
        reader.close()
    events = _by_path(reader.records, "20261120-090000_joe.wav")
    assert len(events) == 1 and len(reader.records) == 2
    assert events[0]["size"] == sum(len(p) for p in parts)
    assert events[0]["checksum"].endswith("-3")  # a multipart ETag: one per completed upload


async def test_each_misconfiguration_fails_clearly_while_another_connector_keeps_working(
    kafka: str,
    prefix: str,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_secret = "Wr0ng/" + s3_server.secret_access_key[6:]
    missing_bucket = f"callstream-missing-{uuid.uuid4().hex[:8]}"
    dead_port = free_port()
    read_only_id, read_only_secret = s3_server.restricted_key(["s3:GetObject"])
    good = connector("good", s3_config(s3_server, s3_bucket, prefix="good"))
    broken = {
        "bad-secret": s3_config(s3_server, s3_bucket, prefix="a", secret_access_key=wrong_secret),
        "bad-key-id": s3_config(
            s3_server, s3_bucket, prefix="b", access_key_id="AKIAIOSFODNN7EXAMPLE"
        ),
        "no-bucket": s3_config(s3_server, missing_bucket),
        "unreachable": s3_config(
            s3_server, s3_bucket, endpoint_url=f"http://127.0.0.1:{dead_port}"
        ),
        "denied": s3_config(
            s3_server,
            s3_bucket,
            prefix="c",
            access_key_id=read_only_id,
            secret_access_key=read_only_secret,
        ),
    }
    s3_server.client().put_object(Bucket=s3_bucket, Key="good/keep-working.csv", Body=b"id\n1\n")
    conns = [good, *(connector(name, cfg) for name, cfg in broken.items())]
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        conns,
        processors=NO_PROCESSORS,
        api={"operator_token": OPERATOR_TOKEN},
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    caplog.set_level(logging.DEBUG)  # the service's boto3 debug lines too: none may hold a secret
    try:
        async with running(settings) as service:
            await reader.wait_for(lambda rs: len(rs) >= 1)
            s3_server.client().put_object(Bucket=s3_bucket, Key="good/later.csv", Body=b"id\n")
            await reader.wait_for(lambda rs: len(rs) >= 2)  # still polling between failures
            await asyncio.sleep(1.5)  # a few back-off rounds of the failing connectors
            status = {c["connector"]: c for c in await running_connectors(service)}
            metrics_body = await _metrics(service)
            # An operator creates the missing bucket: that connector recovers, no restart.
            s3_server.create_bucket(missing_bucket)
            s3_server.client().put_object(Bucket=missing_bucket, Key="first.csv", Body=b"id\n")
            await reader.wait_for(lambda rs: any(r["connector"] == "no-bucket" for r in rs))
            recovered = {c["connector"]: c for c in await running_connectors(service)}
    finally:
        reader.close()
        s3_server.delete_bucket(missing_bucket)
    assert sorted((r["connector"], r["path"]) for r in reader.records) == [
        ("good", "keep-working.csv"),
        ("good", "later.csv"),
        ("no-bucket", "first.csv"),
    ]
    assert status["good"]["state"] == "ok"
    expected = {
        "bad-secret": ("auth", "SignatureDoesNotMatch"),
        "bad-key-id": ("auth", "does not know access key id 'AKIAIOSFODNN7EXAMPLE'"),
        "no-bucket": ("not_found", f"bucket {missing_bucket!r} does not exist"),
        "unreachable": ("network", "endpoint unreachable"),
        "denied": ("access_denied", "access denied"),
    }
    for name, (kind, says) in expected.items():
        st, cfg = status[name], broken[name]
        assert st["state"] == "error" and st["consecutive_failures"] >= 2, (name, st)  # retried
        assert st["last_error_kind"] == kind, (name, st)
        assert says in st["last_error"], (name, st)
        assert f"s3://{cfg.bucket}/" in st["last_error"], (name, st)
        assert f"endpoint {cfg.endpoint_url}" in st["last_error"], (name, st)
        assert f'connector="{name}",kind="{kind}"' in metrics_body
    assert recovered["no-bucket"]["state"] == "ok" and recovered["no-bucket"]["last_error"] is None
    assert recovered["bad-secret"]["state"] == "error"
    for secret in (s3_server.secret_access_key, wrong_secret, read_only_secret):
        assert secret not in str(status)
        assert secret not in metrics_body
        assert secret not in caplog.text
    assert "SignatureDoesNotMatch" in caplog.text  # the failures are logged (without secrets)


def _cleanup_counts(service: Service) -> dict[str, float]:
    text = generate_latest(service.metrics.registry).decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "callstream_connector_cleanups":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["action"]] = sample.value
    return counts


def _keys(server: S3Server, bucket: str) -> dict[str, Any]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o for page in pages for o in page.get("Contents", ())}


async def _until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


async def test_clean_up_moves_processed_objects_and_rejected_ones_to_invalid(
    kafka: str, prefix: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Real processors judge the files; the poller's clean-up moves the objects (server-side
    copy, then delete) and, after the settle window, leaves them there for good."""
    client = s3_server.client()
    files = {
        "drop/ok.csv": (CSV_HEADER + conversation_row(1) + conversation_row(2)).encode(),
        "drop/partial.csv": (CSV_HEADER + conversation_row(3) + "CALL-bad,voice\n").encode(),
        "drop/junk.csv": b"\x00\x01 not a csv export",
    }
    for key, body in files.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    conn = connector(
        "s3-drop",
        s3_config(s3_server, s3_bucket, prefix="drop"),
        cleanup="move",
        min_age_seconds=1,
        cleanup_settle_seconds=3,
    )
    settings = settings_for(kafka, prefix, tmp_path / "data", [conn])
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    moved = {
        "drop/processed/ok.csv": "drop/ok.csv",
        "drop/invalid/partial.csv": "drop/partial.csv",
        "drop/invalid/junk.csv": "drop/junk.csv",
    }
    try:
        async with running(settings) as service:
            await _until(lambda: set(_keys(s3_server, s3_bucket)) == set(moved), "the moves")
            await _until(lambda: _cleanup_counts(service).get("settled") == 3, "settling")
            await asyncio.sleep(2)  # more polls: nothing comes back, nothing is announced again
            await reader.wait_for(lambda rs: len(rs) >= 3)  # the three announcements ...
            await asyncio.to_thread(reader.poll, 1.0)  # ... and no fourth
            counts = _cleanup_counts(service)
            deadline = time.monotonic() + 30
            while (cases := await service.cases.count_cases("acme")) < 3:
                assert time.monotonic() < deadline, f"{cases} cases"
                await asyncio.sleep(0.3)
    finally:
        reader.close()
    keys = _keys(s3_server, s3_bucket)
    assert set(keys) == set(moved)
    for target, source in moved.items():
        body = client.get_object(Bucket=s3_bucket, Key=target)
        assert body["Body"].read() == files[source]
        assert MTIME_METADATA in body["Metadata"]  # the source's mtime travels with the copy
    assert sorted(r["path"] for r in reader.records) == ["junk.csv", "ok.csv", "partial.csv"]
    assert counts.get("moved_processed") == 1 and counts.get("moved_invalid") == 2
    assert "moved_back" not in counts and "failed" not in counts
    assert cases == 3  # ok.csv's two conversations and partial.csv's valid one


async def test_a_gcs_bucket_is_configured_as_an_s3_compatible_endpoint_with_hmac_keys(
    kafka: str, prefix: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """The configuration the README gives for GCS (interoperability endpoint, HMAC key,
    region auto, path-style addressing), pointed at the test server: the same code path."""
    config = tmp_path / "callstream.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
demo: false
http: {{port: 0}}
kafka: {{bootstrap_servers: "{kafka}", topic_prefix: {prefix}, partitions: 3}}
processors: {{enabled: false}}
api: {{operator_token: {OPERATOR_TOKEN}}}
tenants:
  - id: acme
    connectors:
      - name: gcs-voice
        poll: {{interval_seconds: 0.3, min_age_seconds: 0}}
        store:
          type: s3
          endpoint_url: {s3_server.endpoint_url}   # https://storage.googleapis.com for GCS
          region: auto
          addressing_style: path
          bucket: {s3_bucket}
          prefix: voice/
          access_key_id: {s3_server.access_key_id}          # the HMAC key's access id
          secret_access_key: "{s3_server.secret_access_key}"  # and its secret
"""
    )
    settings = load_settings(config)
    store = settings.tenants[0].connectors[0].store
    assert store.type == "s3" and s3_server.secret_access_key not in repr(settings)
    s3_server.client().put_object(Bucket=s3_bucket, Key="voice/call-1.json", Body=b"{}")
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    try:
        async with running(settings) as service:
            await reader.wait_for(lambda rs: len(rs) >= 1)
            status = await running_connectors(service)
    finally:
        reader.close()
    assert [(r["connector"], r["path"]) for r in reader.records] == [("gcs-voice", "call-1.json")]
    assert status[0]["state"] == "ok"
