"""The media stores against real servers: moto's S3 server (credentials checked) and a local
folder. Round trips, multipart, the size and format refusals, and ``kill -9`` mid-copy."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from media_copy import pattern
from servers.s3 import S3Server
from servers.sshd import SftpServer
from support import (
    TopicReader,
    arrival_topics,
    connector,
    running,
    settings_for,
    sftp_config,
    sftp_session,
    upload,
)

from streams.errors import MediaStoreError
from streams.failures import Failure, classify
from streams.media import LocalMediaStore, MediaRejected, media_key
from streams.media_s3 import S3MediaStore
from streams.settings import S3MediaSettings
from streams.topics import Topics

MiB = 1024 * 1024
PART = 5 * MiB
WHEN = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
COPIER = Path(__file__).with_name("media_copy.py")


def media_settings(server: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": "media",
        "endpoint_url": server.endpoint_url,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "part_size_bytes": PART,
        **extra,
    }


def s3_store(server: S3Server, bucket: str, **extra: Any) -> S3MediaStore:
    return S3MediaStore(S3MediaSettings(**media_settings(server, bucket, **extra)))


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pattern(0, int(seconds * rate) * 2))
    return out.getvalue()


def keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.fixture
def client(s3_server: S3Server) -> Any:
    return s3_server.client()


# ----------------------------------------------------------------------------- S3 round trips


def test_a_small_recording_round_trips_with_its_checksum(
    s3_server: S3Server, s3_bucket: str, client: Any
) -> None:
    data = wav(20.0)  # 320 kB: one PutObject
    store = s3_store(s3_server, s3_bucket)
    stored = store.put_media(
        "acme", "f0001", "in/20261120-093000_u1.wav", io.BytesIO(data), when=WHEN
    )
    digest = hashlib.sha256(data).hexdigest()
    assert stored.key == "acme/2026/11/20/f0001/20261120-093000_u1.wav"
    assert stored.uri == f"s3://{s3_bucket}/media/{stored.key}"
    assert stored.ref == f"{stored.uri}#sha256={digest}"
    assert (stored.sha256, stored.size, stored.duration_seconds) == (digest, len(data), 20.0)
    body = client.get_object(Bucket=s3_bucket, Key=f"media/{stored.key}")
    assert body["Body"].read() == data
    assert body["Metadata"] == {"sha256": digest}
    assert body["ContentType"] == "audio/x-wav"
    assert keys(client, s3_bucket) == [f"media/{stored.key}"]


def test_a_recording_larger_than_a_part_goes_by_multipart_and_is_verified(
    s3_server: S3Server, s3_bucket: str, client: Any
) -> None:
    data = wav(800.0)  # 12.8 MB: three 5 MiB parts
    store = s3_store(s3_server, s3_bucket)
    stored = store.put_media("acme", "f0002", "long.wav", io.BytesIO(data), when=WHEN)
    digest = hashlib.sha256(data).hexdigest()
    assert (stored.sha256, stored.size, stored.duration_seconds) == (digest, len(data), 800.0)
    head = client.head_object(Bucket=s3_bucket, Key=f"media/{stored.key}", ChecksumMode="ENABLED")
    assert head["Metadata"] == {"sha256": digest}
    assert head["ContentLength"] == len(data)
    # S3 computed the whole object's SHA-256 itself on the final copy.
    assert hashlib.sha256(data).digest() == __import__("base64").b64decode(head["ChecksumSHA256"])
    got = client.get_object(Bucket=s3_bucket, Key=f"media/{stored.key}")["Body"].read()
    assert got == data
    assert keys(client, s3_bucket) == [f"media/{stored.key}"]  # no staging object left
    assert uploads(client, s3_bucket) == []


def test_too_large_leaves_no_object_and_no_pending_upload(
    s3_server: S3Server, s3_bucket: str, client: Any
) -> None:
    store = s3_store(s3_server, s3_bucket, max_bytes=12 * MiB)
    with pytest.raises(MediaRejected) as err:
        store.put_media("acme", "f0003", "big.wav", io.BytesIO(pattern(0, 13 * MiB)), when=WHEN)
    assert err.value.reason == "too_large"
    assert keys(client, s3_bucket) == []
    assert uploads(client, s3_bucket) == []


def test_unsupported_media_is_refused_before_any_request(s3_server: S3Server) -> None:
    # An endpoint nobody listens on: any request would fail with a store error instead.
    store = S3MediaStore(
        S3MediaSettings(
            type="s3",
            bucket="nowhere",
            endpoint_url="http://127.0.0.1:9",
            access_key_id="AK",
            secret_access_key="SK",
        )
    )
    with pytest.raises(MediaRejected) as err:
        store.put_media("acme", "f0004", "notes.docx", io.BytesIO(b"x"), when=WHEN)
    assert err.value.reason == "unsupported_media"


def test_raw_rows_are_kept_with_put_and_put_bytes(
    s3_server: S3Server, s3_bucket: str, client: Any
) -> None:
    store = s3_store(s3_server, s3_bucket)
    assert (
        store.put_bytes("acme/dead-letters/c/f/3.raw", b"a,b,c\n") == "acme/dead-letters/c/f/3.raw"
    )
    big = pattern(0, 6 * MiB)
    key, digest = store.put("acme/dead-letters/c/f/4.raw", io.BytesIO(big))
    assert (key, digest) == ("acme/dead-letters/c/f/4.raw", hashlib.sha256(big).hexdigest())
    assert client.get_object(Bucket=s3_bucket, Key=f"media/{key}")["Body"].read() == big


def test_store_outages_and_refused_credentials_are_transient(
    s3_server: S3Server, s3_bucket: str
) -> None:
    cases = {
        "wrong secret": media_settings(s3_server, s3_bucket, secret_access_key="x" * 40),
        "missing bucket": media_settings(s3_server, "no-such-bucket-here"),
        "nobody listening": media_settings(
            s3_server, s3_bucket, endpoint_url="http://127.0.0.1:9", max_attempts=1
        ),
    }
    for label, settings in cases.items():
        store = S3MediaStore(S3MediaSettings(**settings))
        with pytest.raises(MediaStoreError) as err:
            store.put_media("acme", "f0005", "a.wav", io.BytesIO(wav(1.0)), when=WHEN)
        assert classify(err.value) is Failure.TRANSIENT, label
        assert settings["secret_access_key"] not in str(err.value), label
        assert s3_bucket in str(err.value) or "no-such-bucket-here" in str(err.value), label


# ----------------------------------------------------------------------------- kill -9


def start_copier(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(COPIER), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(check: Any, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the copier exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "the copy never got under way"
        time.sleep(0.05)


@pytest.fixture
def copier_procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:  # only the processes this test started
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_kill_9_mid_copy_leaves_nothing_visible_and_the_redone_copy_completes(
    s3_server: S3Server,
    s3_bucket: str,
    client: Any,
    tmp_path: Path,
    copier_procs: list[subprocess.Popen[str]],
) -> None:
    size = 8 * PART  # 40 MiB from a slow source: 1 MiB every 0.1 s
    spec = {
        "media": media_settings(s3_server, s3_bucket),
        "data_dir": str(tmp_path),
        "tenant": "acme",
        "file_id": "f0006",
        "name": "slow.wav",
        "when": WHEN.isoformat(),
        "source": {"kind": "slow", "size": size, "chunk": MiB, "delay": 0.1},
    }
    proc = start_copier(spec)
    copier_procs.append(proc)

    def parts_uploaded() -> bool:
        for up in uploads(client, s3_bucket):
            parts = client.list_parts(Bucket=s3_bucket, Key=up["Key"], UploadId=up["UploadId"])
            if len(parts.get("Parts", [])) >= 2:
                return True
        return False

    wait_until(parts_uploaded, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    key = "media/acme/2026/11/20/f0006/slow.wav"
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        client.head_object(Bucket=s3_bucket, Key=key)
    assert missing.value.response["Error"]["Code"] == "404"
    assert keys(client, s3_bucket) == []  # nothing under the key, nothing complete anywhere
    pending = uploads(client, s3_bucket)
    assert len(pending) == 1 and pending[0]["Key"].startswith("media/.incoming/")

    # The restart: a new store cleans up what the killed one left, and the copy is redone.
    # (moto reports every upload as initiated in 2010, so any age limit counts it as stale.)
    restarted = s3_store(s3_server, s3_bucket, stale_upload_minutes=1)
    restarted.start()
    assert uploads(client, s3_bucket) == []
    data = pattern(0, size)
    stored = restarted.put_media("acme", "f0006", "slow.wav", io.BytesIO(data), when=WHEN)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    head = client.head_object(Bucket=s3_bucket, Key=key)
    assert (head["ContentLength"], head["Metadata"]) == (size, {"sha256": stored.sha256})
    assert keys(client, s3_bucket) == [key]
    assert uploads(client, s3_bucket) == []


def test_abort_stale_uploads_spares_young_ones(
    s3_server: S3Server, s3_bucket: str, client: Any
) -> None:
    store = s3_store(s3_server, s3_bucket, stale_upload_minutes=60)
    up = client.create_multipart_upload(Bucket=s3_bucket, Key="media/.incoming/x.wav.1")
    other = client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/y.wav")
    initiated = uploads(client, s3_bucket)[0]["Initiated"]
    # Just after the upload started nothing is stale; an hour later it is. Uploads outside
    # the store's staging prefix are never touched.
    assert store.abort_stale_uploads(now=initiated + dt.timedelta(minutes=1)) == (0, 0)
    assert store.abort_stale_uploads(now=initiated + dt.timedelta(minutes=61)) == (1, 0)
    assert [u["UploadId"] for u in uploads(client, s3_bucket)] == [other["UploadId"]]
    assert up["UploadId"] != other["UploadId"]


def test_kill_9_mid_copy_into_the_local_store_promotes_no_part_file(
    tmp_path: Path, copier_procs: list[subprocess.Popen[str]]
) -> None:
    root = tmp_path / "media"
    size = 30 * MiB
    spec = {
        "media": {"type": "local", "root": str(root)},
        "data_dir": str(tmp_path),
        "tenant": "acme",
        "file_id": "f0007",
        "name": "slow.wav",
        "when": WHEN.isoformat(),
        "source": {"kind": "slow", "size": size, "chunk": MiB, "delay": 0.1},
    }
    proc = start_copier(spec)
    copier_procs.append(proc)
    target = root / "acme/2026/11/20/f0007/slow.wav"
    part = target.with_name(".slow.wav.part")
    wait_until(lambda: part.exists() and part.stat().st_size >= 3 * MiB, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not target.exists()
    assert 0 < part.stat().st_size < size
    data = pattern(0, size)
    stored = LocalMediaStore(root).put_media(
        "acme", "f0007", "slow.wav", io.BytesIO(data), when=WHEN
    )
    assert target.read_bytes() == data and stored.size == size
    assert not part.exists()


# ----------------------------------------------------------------------------- the service


async def test_recordings_from_sftp_reach_the_s3_media_store_through_the_service(
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    s3_server: S3Server,
    s3_bucket: str,
    client: Any,
    tmp_path: Path,
) -> None:
    files = {
        "rec/20261120-093000_u1.wav": wav(2.0),  # one PutObject
        "rec/20261120-094500_u2.wav": wav(420.0),  # 6.7 MB: multipart
        "rec/20261120-100000_u3.wav": wav(600.0),  # 9.6 MB: over max_bytes
    }
    settings = settings_for(
        kafka,
        prefix,
        tmp_path,
        [connector("voice", sftp_config(sftp_server))],
        media=media_settings(s3_server, s3_bucket, max_bytes=8 * MiB),
    )
    t = Topics(prefix)
    arrivals = TopicReader(kafka, arrival_topics(prefix))  # the large ones in the bulk lane
    outcomes = TopicReader(kafka, t.file_outcomes, "callstream.FileOutcome")
    dead = TopicReader(kafka, t.dead_letter, "callstream.DeadLetter")
    try:
        async with running(settings):
            with sftp_session(sftp_server) as sftp:
                for path, data in files.items():
                    upload(sftp, path, data)
            await outcomes.wait_for(lambda rs: len(rs) >= 3, 90)
            await dead.wait_for(lambda rs: len(rs) >= 1, 30)
            arrivals.poll(1.0)
    finally:
        arrivals.close()
        outcomes.close()
        dead.close()
    by_path = {o["path"]: o for o in outcomes.records}
    assert {p: (o["outcome"], o["reason"]) for p, o in by_path.items()} == {
        "rec/20261120-093000_u1.wav": ("processed", None),
        "rec/20261120-094500_u2.wav": ("processed", None),
        "rec/20261120-100000_u3.wav": ("invalid", "too_large"),
    }
    assert [(d["path"], d["reason"], d["stage"]) for d in dead.records] == [
        ("rec/20261120-100000_u3.wav", "too_large", "media")
    ]
    expected = []
    for arrival in arrivals.records:
        if arrival["path"].endswith("u3.wav"):
            continue
        key = "media/" + media_key(
            "acme", arrival["file_id"], arrival["path"], arrival["announced_at"]
        )
        data = files[arrival["path"]]
        head = client.head_object(Bucket=s3_bucket, Key=key)
        assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
        assert head["ContentLength"] == len(data)
        expected.append(key)
    assert sorted(keys(client, s3_bucket)) == sorted(expected) and len(expected) == 2
    assert uploads(client, s3_bucket) == []
