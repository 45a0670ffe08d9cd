"""The S3 store against moto's S3 server: what only S3 has.

Prefix boundaries, keys that are not safe paths, "folder" placeholders, pruned folders that
are jumped over, reads resumed with ranged GETs after a real connection break (a loopback
proxy cuts the TCP connection mid-body), multipart copies, the default credential chain and
each error an operator can cause. What every store shares is in test_store_conformance.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from servers import free_port
from servers.proxy import StallingProxy
from servers.s3 import S3Server
from support import s3_config

from connectors.base import RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConnectorError,
    FileVanished,
    StoreNotFound,
    StoreUnavailable,
    UnsafePath,
)
from connectors.s3 import MTIME_METADATA, S3Store

MiB = 1024 * 1024


def _put(server: S3Server, bucket: str, keys: dict[str, bytes]) -> None:
    client = server.client()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), keys.items()
            )
        )


def _listing(store: S3Store, prune: Any = None) -> tuple[dict[str, RemoteFile], dict[str, str]]:
    files: dict[str, RemoteFile] = {}
    skipped: dict[str, str] = {}
    for e in store.iter_entries(prune):
        if isinstance(e, RemoteFile):
            files[e.path] = e
        else:
            assert isinstance(e, SkippedEntry)
            skipped[e.path] = e.reason
    return files, skipped


def test_only_keys_under_the_prefix_are_listed(s3_server: S3Server, s3_bucket: str) -> None:
    _put(
        s3_server,
        s3_bucket,
        {
            "inbox/": b"",
            "inbox/a.csv": b"a",
            "inbox/sub/": b"",
            "inbox/sub/d.csv": b"dd",
            "inbox2/b.csv": b"b",
            "inboxes.csv": b"c",
            "elsewhere/c.csv": b"c",
        },
    )
    with S3Store(s3_config(s3_server, s3_bucket, prefix="/inbox/")) as store:
        files, skipped = _listing(store)
        assert sorted(files) == ["a.csv", "sub/d.csv"] and not skipped
        assert files["sub/d.csv"].size == 2 and files["sub/d.csv"].etag
        assert store.description == (f"s3://{s3_bucket}/inbox/ (endpoint {s3_server.endpoint_url})")
    with S3Store(s3_config(s3_server, s3_bucket)) as whole_bucket:
        files, skipped = _listing(whole_bucket)
        assert sorted(files) == [
            "elsewhere/c.csv",
            "inbox/a.csv",
            "inbox/sub/d.csv",
            "inbox2/b.csv",
            "inboxes.csv",
        ]


def test_keys_that_are_not_safe_paths_are_skipped_never_served(
    s3_server: S3Server, s3_bucket: str
) -> None:
    unsafe = [
        "x/../escape.csv",
        "/absolute.csv",
        "a//b.csv",
        "./dot.csv",
        "esc\x1bname.csv",  # (moto cannot store a newline in a key)
        "tab\tname.csv",
        "del\x7f.csv",
        "not-a-folder/",  # ends in '/' but has content: not a placeholder
        "long/" + "n" * 1030 + ".csv",
    ]
    objects = {f"inbox/{k}": b"x" for k in unsafe} | {"inbox/ok.csv": b"ok"}
    _put(s3_server, s3_bucket, objects)
    with S3Store(s3_config(s3_server, s3_bucket, prefix="inbox")) as store:
        files, skipped = _listing(store)
        assert sorted(files) == ["ok.csv"]
        assert skipped == dict.fromkeys(unsafe, SkipReason.UNSAFE_NAME)
        for bad in ("x/../escape.csv", "/absolute.csv"):
            with pytest.raises(UnsafePath):
                store.open(bad)


def test_a_pruned_folder_is_jumped_over_not_paged_through(
    s3_server: S3Server, s3_bucket: str
) -> None:
    objects = {f"inbox/processed/{i:05d}.csv": b"p" for i in range(120)}
    neighbours = ["a.csv", "processed-late.csv", "processed0.csv", "processedz/x.csv", "zz.csv"]
    objects |= {f"inbox/{k}": b"n" for k in neighbours}
    objects |= {"inbox/processed/": b"", "inbox/deep/processed/x.csv": b"d"}
    _put(s3_server, s3_bucket, objects)
    with S3Store(s3_config(s3_server, s3_bucket, prefix="inbox")) as store:
        store._page_size = 50  # S3 pages hold 1,000 keys: the same logic on fewer objects
        requests: list[dict[str, Any]] = []
        store._client().meta.events.register(
            "before-parameter-build.s3.ListObjectsV2", lambda params, **_: requests.append(params)
        )
        files, _ = _listing(store, lambda folder: folder == "processed")
        assert sorted(files) == sorted([*neighbours, "deep/processed/x.csv"])
        # the first page ends inside processed/: the next one starts after it
        assert len(requests) == 2 and requests[1]["StartAfter"].startswith("inbox/processed/")
        requests.clear()
        files, _ = _listing(store)
        assert len(files) == 120 + len(neighbours) + 1 and len(requests) == 3


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[StallingProxy]:
    """A loopback proxy in front of the S3 server that can cut a connection mid-response."""
    with StallingProxy(s3_server.host, s3_server.port) as p:
        yield p


def _via(proxy: StallingProxy, server: S3Server, bucket: str, **overrides: Any) -> S3Store:
    return S3Store(
        s3_config(server, bucket, endpoint_url=f"http://127.0.0.1:{proxy.port}", **overrides)
    )


def _big_object(server: S3Server, bucket: str, key: str, size: int) -> bytes:
    data = os.urandom(size)
    server.client().put_object(Bucket=bucket, Key=key, Body=data)
    return data


def test_a_read_resumes_with_a_ranged_get_after_the_connection_breaks(
    s3_server: S3Server, s3_bucket: str, proxy: StallingProxy
) -> None:
    data = _big_object(s3_server, s3_bucket, "rec/call.wav", 24 * MiB + 3)
    with _via(proxy, s3_server, s3_bucket) as store:
        gets: list[dict[str, Any]] = []
        store._client().meta.events.register(
            "before-call.s3.GetObject", lambda params, **_: gets.append(params)
        )
        proxy.break_after(5 * MiB)  # this GET's response: headers, then 5 MiB of body
        digest = hashlib.sha256()
        total = 0
        with store.open("rec/call.wav") as fh:
            while chunk := fh.read(MiB):
                digest.update(chunk)
                total += len(chunk)
    assert proxy.breaks == 1
    assert total == len(data) and digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(gets) == 2
    resumed = gets[1]["headers"]
    start = int(resumed["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 4 * MiB < start < len(data)
    assert resumed["If-Match"].strip('"') == hashlib.md5(data).hexdigest()  # noqa: S324


def test_an_object_replaced_during_a_broken_read_is_never_spliced(
    s3_server: S3Server, s3_bucket: str, proxy: StallingProxy
) -> None:
    _big_object(s3_server, s3_bucket, "rec/call.wav", 24 * MiB)
    with _via(proxy, s3_server, s3_bucket) as store:
        proxy.break_after(5 * MiB)
        with store.open("rec/call.wav") as fh:
            fh.read(MiB)
            _big_object(s3_server, s3_bucket, "rec/call.wav", 24 * MiB)  # a new version
            with pytest.raises(FileVanished, match="replaced by a new version"):
                while fh.read(MiB):
                    pass


def test_a_read_that_may_not_resume_fails_as_unavailable(
    s3_server: S3Server, s3_bucket: str, proxy: StallingProxy
) -> None:
    _big_object(s3_server, s3_bucket, "rec/call.wav", 24 * MiB)
    with _via(proxy, s3_server, s3_bucket, read_resume_attempts=0) as store:
        proxy.break_after(5 * MiB)
        with store.open("rec/call.wav") as fh, pytest.raises(StoreUnavailable, match="broke"):
            while fh.read(MiB):
                pass


def test_a_large_object_moves_by_multipart_copy_keeping_bytes_and_mtime(
    s3_server: S3Server, s3_bucket: str
) -> None:
    data = _big_object(s3_server, s3_bucket, "in/big.wav", 13 * MiB)
    with S3Store(s3_config(s3_server, s3_bucket, prefix="in")) as store:
        # Above 5 GiB S3 needs a multipart copy; the same code path, with a smaller threshold.
        store._transfer = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=5 * MiB)
        before = store.stat("big.wav")
        list(store.iter_entries(lambda folder: folder == "processed"))
        store.move("big.wav", "processed/big.wav")
        moved = store.stat("processed/big.wav")
        assert store.stat("big.wav") is None
    assert moved is not None and before is not None
    assert (moved.size, moved.mtime) == (before.size, before.mtime)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="in/processed/big.wav")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: a multipart copy
    assert head["Metadata"][MTIME_METADATA] == str(int(before.mtime))
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="in/processed/big.wav")["Body"]
    assert body.read() == data


def test_the_default_credential_chain_is_used_without_keys(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _put(s3_server, s3_bucket, {"a.csv": b"a"})
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    config = s3_config(s3_server, s3_bucket, access_key_id=None, secret_access_key=None)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(AuthenticationFailed, match="default credential chain found none"):
        S3Store(config).connect()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    with S3Store(config) as store:
        assert [e.path for e in store.iter_entries()] == ["a.csv"]


@pytest.mark.parametrize(
    ("case", "error", "kind", "says"),
    [
        ("wrong secret", AuthenticationFailed, "auth", "SignatureDoesNotMatch"),
        ("wrong key id", AuthenticationFailed, "auth", "does not know access key id"),
        ("missing bucket", StoreNotFound, "not_found", "does not exist"),
        ("listing denied", AccessDenied, "access_denied", "access denied"),
        ("unreachable", StoreUnavailable, "network", "endpoint unreachable"),
    ],
)
def test_each_misconfiguration_gives_its_own_clear_error(
    s3_server: S3Server,
    s3_bucket: str,
    case: str,
    error: type[ConnectorError],
    kind: str,
    says: str,
) -> None:
    wrong_secret = "wrong-" + s3_server.secret_access_key
    bucket = "no-such-bucket-here" if case == "missing bucket" else s3_bucket
    overrides: dict[str, Any] = {
        "wrong secret": {"secret_access_key": wrong_secret},
        "wrong key id": {"access_key_id": "AKIAIOSFODNN7EXAMPLE"},
        "missing bucket": {},
        "listing denied": {},
        "unreachable": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
    }[case]
    if case == "listing denied":  # a key that may read objects but not list the bucket
        key_id, secret = s3_server.restricted_key(["s3:GetObject"])
        overrides = {"access_key_id": key_id, "secret_access_key": secret}
    config = s3_config(s3_server, bucket, **overrides)
    with pytest.raises(error) as caught:
        S3Store(config).connect()
    message = str(caught.value)
    assert type(caught.value) is error and caught.value.kind == kind
    assert says in message
    assert config.bucket in message and (config.endpoint_url or "") in message
    assert s3_server.secret_access_key not in message and wrong_secret not in message
