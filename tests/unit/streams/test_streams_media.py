"""Media stores without a network: the local store, the media settings, the file processor's
handling of recordings, and how S3 failures are sorted by the failure policy."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import wave
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from connectors.base import RemoteFile
from connectors.local import LocalConfig
from connectors.poller import PollConfig
from streams.codec import AvroCodec
from streams.errors import ConfigError, MediaStoreError
from streams.failures import Failure, classify
from streams.ingest.files import FileProcessor
from streams.kafka import Record
from streams.media import LocalMediaStore, MediaRejected, StoredMedia
from streams.media_s3 import S3MediaStore, open_media_store
from streams.metrics import Metrics
from streams.runner import file_id
from streams.settings import (
    ConnectorSettings,
    LocalMediaSettings,
    S3MediaSettings,
    Settings,
    TenantSettings,
    load_settings,
)
from streams.topics import Topics

WHEN = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return out.getvalue()


# ----------------------------------------------------------------------------- local store


def test_local_put_media_keeps_bytes_checksum_duration_and_the_dated_layout(
    tmp_path: Path,
) -> None:
    data = wav(12.5)
    stored = LocalMediaStore(tmp_path).put_media(
        "acme", "f123", "calls/in/20261120-233000_u1.wav", io.BytesIO(data), when=WHEN
    )
    # The date is the UTC day: 23:30 at -05:00 is the 21st.
    assert stored.key == "acme/2026/11/21/f123/20261120-233000_u1.wav"
    assert (tmp_path / stored.key).read_bytes() == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert stored.duration_seconds == pytest.approx(12.5)
    assert stored.uri == (tmp_path / stored.key).absolute().as_uri()
    assert stored.ref == f"{stored.uri}#sha256={stored.sha256}"
    assert [p.name for p in (tmp_path / stored.key).parent.iterdir()] == [Path(stored.key).name]


def test_local_too_large_leaves_nothing_and_unsupported_copies_nothing(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path, max_bytes=3 * 1024 * 1024)
    with pytest.raises(MediaRejected) as too_large:
        store.put_media("acme", "f1", "big.wav", io.BytesIO(os.urandom(4 * 1024 * 1024)), when=WHEN)
    assert too_large.value.reason == "too_large"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []

    class Untouchable(io.BytesIO):
        def read(self, *_args: Any) -> bytes:
            raise AssertionError("read before the name was checked")

    with pytest.raises(MediaRejected) as unsupported:
        store.put_media("acme", "f2", "notes.txt", Untouchable(), when=WHEN)
    assert unsupported.value.reason == "unsupported_media"


def test_a_recording_without_a_readable_header_has_no_duration(tmp_path: Path) -> None:
    stored = LocalMediaStore(tmp_path).put_media(
        "acme", "f1", "x.mp3", io.BytesIO(b"\xff\xfb" + os.urandom(5000)), when=WHEN
    )
    assert stored.duration_seconds is None


# ----------------------------------------------------------------------------- settings


def test_the_media_store_defaults_to_a_local_folder_under_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, demo=False)
    assert isinstance(s.media, LocalMediaSettings)
    assert s.media_root == tmp_path / "media"
    store = open_media_store(s)
    assert isinstance(store, LocalMediaStore)
    assert store.root == tmp_path / "media"
    assert store.max_bytes == 2 * 1024**3


def test_s3_media_settings_from_yaml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CALLSTREAM_"):
            monkeypatch.delenv(name)
    config = tmp_path / "c.yaml"
    config.write_text(
        "media:\n  type: s3\n  bucket: recordings\n  prefix: cs/\n"
        "  endpoint_url: http://127.0.0.1:9\n  addressing_style: path\n"
        "  access_key_id: AKIAEXAMPLE\n  max_bytes: 1000000000\n"
    )
    monkeypatch.setenv("CALLSTREAM_MEDIA__SECRET_ACCESS_KEY", "s3cr3t-value")
    s = load_settings(config)
    assert isinstance(s.media, S3MediaSettings)
    assert (s.media.bucket, s.media.prefix, s.media.max_bytes) == ("recordings", "cs", 10**9)
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s.media)
    store = open_media_store(s)
    assert isinstance(store, S3MediaStore)
    assert (store.bucket, store.prefix, store.part_size) == ("recordings", "cs/", 16 * 1024**2)
    assert store.endpoint == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("media", "field"),
    [
        ("{type: s3}", "media.s3.bucket"),
        ("{type: s3, bucket: b1, access_key_id: AK}", "media.s3"),
        (
            "{type: s3, bucket: b1, max_bytes: 2000000000, part_size_bytes: 5242880, prefix: ../x}",
            "media.s3.prefix",
        ),
        ("{type: s3, bucket: b1, part_size_bytes: 1000}", "media.s3.part_size_bytes"),
        ("{type: local, max_bytes: 99999999999}", "media.local.max_bytes"),
        ("{type: ftp}", "media"),
    ],
)
def test_bad_media_settings_name_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media: str, field: str
) -> None:
    for name in list(os.environ):
        if name.startswith("CALLSTREAM_"):
            monkeypatch.delenv(name)
    config = tmp_path / "c.yaml"
    config.write_text(f"media: {media}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


# ----------------------------------------------------------------------------- errors


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("SlowDown", 503), Failure.TRANSIENT),
        (client_error("InternalError", 500), Failure.TRANSIENT),
        (client_error("NoSuchBucket", 404), Failure.TRANSIENT),
        (client_error("AccessDenied", 403), Failure.TRANSIENT),
        (client_error("InvalidAccessKeyId", 403), Failure.TRANSIENT),
        (client_error("NoSuchUpload", 404), Failure.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), Failure.TRANSIENT),
        (client_error("InvalidArgument", 400), Failure.UNKNOWN),
        (ParamValidationError(report="bad"), Failure.UNKNOWN),
    ],
)
def test_s3_failures_are_sorted_for_the_failure_policy(exc: Exception, kind: Failure) -> None:
    store = S3MediaStore(
        S3MediaSettings(type="s3", bucket="bucket", endpoint_url="http://s3.example")
    )

    def fail() -> None:
        raise exc

    with pytest.raises(MediaStoreError) as err:
        store._call("storing", "k", fail)
    assert classify(err.value) is kind
    assert "s3://bucket/k" in str(err.value) and "http://s3.example" in str(err.value)


def test_media_rejections_are_not_store_failures() -> None:
    assert classify(MediaStoreError("mismatch", retriable=False)) is Failure.UNKNOWN
    assert classify(MediaStoreError("down")) is Failure.TRANSIENT


# ----------------------------------------------------------------------------- file processor


class Producer:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def send_batch(self, records: list[Record]) -> None:
        self.records.extend(records)


class Outcomes:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def file_outcome(self, fid: str) -> dict[str, Any] | None:
        return self.rows.get(fid)

    async def record_file_outcome(self, row: dict[str, Any]) -> None:
        self.rows[row["file_id"]] = row


def arrival(root: Path, path: str) -> dict[str, Any]:
    st = (root / path).stat()
    version = RemoteFile(path, st.st_size, st.st_mtime).version_id
    return {
        "file_id": file_id("acme", "drop", path, version),
        "tenant": "acme",
        "connector": "drop",
        "path": path,
        "version_id": version,
        "mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        "announced_at": WHEN,
    }


async def run_file(tmp_path: Path, name: str, data: bytes, max_bytes: int) -> tuple[Any, ...]:
    inbox = tmp_path / "in"
    (inbox / name).parent.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(data)
    settings = Settings(
        data_dir=tmp_path / "data",
        demo=False,
        tenants=[
            TenantSettings(
                id="acme",
                connectors=[
                    ConnectorSettings(
                        name="drop",
                        store=LocalConfig(root=inbox),
                        poll=PollConfig(min_age_seconds=0),
                    )
                ],
            )
        ],
    )
    codec, topics, producer, outcomes = AvroCodec(), Topics("t"), Producer(), Outcomes()
    media = LocalMediaStore(tmp_path / "media", max_bytes)
    processor = FileProcessor(settings, codec, topics, producer, Metrics(), outcomes, media)
    event = arrival(inbox, name)
    try:
        result = await processor.process(event)
    finally:
        processor.close()
    dead = [
        codec.decode("callstream.DeadLetter", v)
        for t, _k, v in producer.records
        if t == topics.dead_letter
    ]
    return result, dead, event


async def test_a_recording_is_stored_under_its_file_id_and_processed(tmp_path: Path) -> None:
    data = wav(3.0)
    result, dead, event = await run_file(tmp_path, "rec/20261120-090000_u7.wav", data, 10**9)
    assert (result.outcome, dead) == ("processed", [])
    stored = tmp_path / "media" / "acme/2026/11/21" / event["file_id"] / "20261120-090000_u7.wav"
    assert stored.read_bytes() == data


async def test_a_too_large_recording_is_rejected_with_its_reason(tmp_path: Path) -> None:
    result, dead, _event = await run_file(tmp_path, "big.wav", wav(3.0), 10_000)
    assert (result.outcome, result.reason, dict(result.rejected)) == (
        "invalid",
        "too_large",
        {"too_large": 1},
    )
    assert [(d["reason"], d["stage"], d["path"]) for d in dead] == [
        ("too_large", "media", "big.wav")
    ]
    assert not [p for p in (tmp_path / "media").rglob("*") if p.is_file()]


def test_stored_media_is_the_contract_bundles_use() -> None:
    stored = StoredMedia("k", "s3://b/k", "ab", 2, 1.5)
    assert stored.ref == "s3://b/k#sha256=ab"
