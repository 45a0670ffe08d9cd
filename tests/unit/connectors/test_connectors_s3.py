"""S3Config validation, error translation and the resuming reader (no network: a fake client)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from typing import Any

import botocore.exceptions as bx
import pytest
from pydantic import ValidationError

from connectors.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConnectorError,
    FileVanished,
    RequestRefused,
    StoreNotFound,
    StoreUnavailable,
)
from connectors.s3 import S3Config, S3Store

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token"


def config(**fields: Any) -> S3Config:
    return S3Config.model_validate({"bucket": "acme-calls", **fields})


def messages(exc: ValidationError) -> str:
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


# -- configuration ------------------------------------------------------------------------------


def test_no_keys_means_the_default_credential_chain() -> None:
    cfg = config()
    assert cfg.access_key_id is None and cfg.secret_access_key is None
    assert cfg.region == "us-east-1" and cfg.prefix == "" and cfg.key_prefix == ""
    assert S3Store(cfg).description == "s3://acme-calls/ (endpoint AWS S3 us-east-1)"


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"access_key_id": "AKIAEXAMPLE"}, "secret_access_key is missing"),
        ({"secret_access_key": SECRET}, "access_key_id is missing"),
        ({"session_token": TOKEN}, "session_token needs access_key_id and secret_access_key"),
    ],
)
def test_keys_come_in_pairs_and_the_error_names_the_missing_field(
    fields: dict[str, str], missing: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**fields)
    text = messages(caught.value)
    assert missing in text
    assert SECRET not in text and TOKEN not in text


def test_secrets_are_masked_in_repr_str_and_json() -> None:
    cfg = config(access_key_id="AKIAEXAMPLE", secret_access_key=SECRET, session_token=TOKEN)
    for shown in (repr(cfg), str(cfg), cfg.model_dump_json(), S3Store(cfg).description):
        assert SECRET not in shown and TOKEN not in shown
    assert cfg.secret_access_key is not None
    assert cfg.secret_access_key.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("given", "normal"),
    [("", ""), ("/", ""), ("/inbox/", "inbox"), ("a//b/./c/", "a/b/c"), ("exports", "exports")],
)
def test_the_prefix_is_normalised(given: str, normal: str) -> None:
    cfg = config(prefix=given)
    assert cfg.prefix == normal
    assert cfg.key_prefix == (f"{normal}/" if normal else "")


@pytest.mark.parametrize("prefix", ["../other-tenant", "a/../../b", "in\nbox"])
def test_a_prefix_leaving_its_root_is_refused_by_name(prefix: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(prefix=prefix)
    assert messages(caught.value).startswith("prefix:")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("storage.googleapis.com", "http:// or https:// URL"),
        ("ftp://minio:9000", "http:// or https:// URL"),
        (f"https://AKIA:{SECRET}@minio.internal", "must not carry credentials"),
        ("https://minio.internal/?x=1", "query"),
        ("https://AKIA:secret/part@minio.internal", "must not carry credentials"),
        ("https://minio.internal:90a0", "port"),
    ],
)
def test_endpoint_url_must_be_a_plain_http_url(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(endpoint_url=url)
    text = messages(caught.value)
    assert text.startswith("endpoint_url:") and problem in text and SECRET not in text


def test_gcs_interoperability_configuration_is_accepted() -> None:
    cfg = config(
        endpoint_url="https://storage.googleapis.com/",
        region="auto",
        addressing_style="path",
        access_key_id="GOOG1EEXAMPLEHMACACCESSID",
        secret_access_key=SECRET,
        prefix="voice",
    )
    assert cfg.endpoint_url == "https://storage.googleapis.com"
    store = S3Store(cfg)
    assert store.description == "s3://acme-calls/voice/ (endpoint https://storage.googleapis.com)"


@pytest.mark.parametrize("bucket", ["ab", "-leading", "has/slash", "white space", "x" * 300])
def test_bucket_names_are_checked(bucket: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(bucket=bucket)
    assert messages(caught.value).startswith("bucket:")


def test_unknown_fields_and_addressing_styles_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        config(password="x")
    with pytest.raises(ValidationError, match="addressing_style"):
        config(addressing_style="dns")


# -- error translation ----------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "", op: str = "ListObjectsV2") -> Any:
    error = {"Code": code, "Message": message} if code else {}
    response: Any = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bx.ClientError(response, op)


STORE = S3Store(
    config(
        endpoint_url="http://minio.internal:9000",
        prefix="in",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
        session_token=TOKEN,
    )
)


@pytest.mark.parametrize(
    ("exc", "path", "error", "kind", "says"),
    [
        (
            client_error("InvalidAccessKeyId", 403),
            None,
            AuthenticationFailed,
            "auth",
            "AKIAEXAMPLE",
        ),
        (client_error("SignatureDoesNotMatch", 403), None, AuthenticationFailed, "auth", "secret"),
        (client_error("ExpiredToken", 400), None, AuthenticationFailed, "auth", "expired"),
        (client_error("AccessDenied", 403), None, AccessDenied, "access_denied", "denied"),
        (client_error("", 403, op="HeadObject"), "a.csv", AccessDenied, "access_denied", "denied"),
        (client_error("NoSuchBucket", 404), None, StoreNotFound, "not_found", "does not exist"),
        (client_error("404", 404), None, StoreNotFound, "not_found", "does not exist"),
        (
            client_error("NoSuchKey", 404, op="GetObject"),
            "a.csv",
            FileVanished,
            "vanished",
            "a.csv",
        ),
        (client_error("PreconditionFailed", 412), "a.csv", FileVanished, "vanished", "replaced"),
        (client_error("SlowDown", 503), None, StoreUnavailable, "network", "SlowDown"),
        (client_error("InternalError", 500), None, StoreUnavailable, "network", "InternalError"),
        (client_error("InvalidObjectState", 403), "a.csv", RequestRefused, "refused", "Invalid"),
        (client_error("InvalidRange", 416), "a.csv", RequestRefused, "refused", "InvalidRange"),
        (client_error("PermanentRedirect", 301), None, AuthenticationFailed, "auth", "region"),
        (
            bx.EndpointConnectionError(endpoint_url="http://minio.internal:9000"),
            None,
            StoreUnavailable,
            "network",
            "unreachable",
        ),
        (
            bx.ConnectTimeoutError(endpoint_url="http://minio.internal:9000"),
            None,
            StoreUnavailable,
            "network",
            "unreachable",
        ),
        (
            bx.ReadTimeoutError(endpoint_url="http://minio.internal:9000"),
            None,
            StoreUnavailable,
            "network",
            "unreachable",
        ),
        (bx.NoCredentialsError(), None, AuthenticationFailed, "auth", "default credential chain"),
    ],
)
def test_boto3_failures_become_connector_errors_naming_bucket_and_endpoint(
    exc: Exception, path: str | None, error: type[ConnectorError], kind: str, says: str
) -> None:
    translated = STORE._translate("listing", exc, path=path)
    text = str(translated)
    assert type(translated) is error and translated.kind == kind
    assert says in text
    assert "s3://acme-calls/in/" in text and "http://minio.internal:9000" in text
    assert SECRET not in text and TOKEN not in text


def test_a_secret_echoed_by_a_server_is_scrubbed_from_the_message() -> None:
    exc = client_error("SignatureDoesNotMatch", 403, f"expected signature for {SECRET}")
    text = str(STORE._translate("listing", exc))
    assert SECRET not in text and "**********" in text


def test_archived_objects_are_refused_for_good_not_retried() -> None:
    exc = client_error(
        "InvalidObjectState", 403, "The operation is not valid for the object's storage class"
    )
    translated = STORE._translate("reading 'a.csv'", exc, path="a.csv")
    assert isinstance(translated, RequestRefused) and not translated.retriable


# -- the resuming reader ------------------------------------------------------------------------


class BreakingBody:
    """A body that raises like a reset connection after ``limit`` bytes."""

    def __init__(self, data: bytes, limit: int | None) -> None:
        self._raw = io.BytesIO(data)
        self._limit = limit
        self.closed = False

    def read(self, n: int) -> bytes:
        if self._limit is not None and self._raw.tell() >= self._limit:
            raise bx.ResponseStreamingError(error="Connection broken: IncompleteRead")
        if self._limit is not None:
            n = min(n, self._limit - self._raw.tell())
        return self._raw.read(n)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """get_object of one object whose bodies break after the given byte counts."""

    def __init__(self, data: bytes, breaks: list[int | None], etag: str = '"v1"') -> None:
        self.data = data
        self.breaks = breaks
        self.etag = etag
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if "IfMatch" in kwargs and kwargs["IfMatch"] != self.etag:
            raise client_error("PreconditionFailed", 412, op="GetObject")
        start = 0
        if "Range" in kwargs:
            start = int(kwargs["Range"].removeprefix("bytes=").removesuffix("-"))
        rest = self.data[start:]
        limit = self.breaks.pop(0) if self.breaks else None
        return {
            "Body": BreakingBody(rest, limit),
            "ETag": self.etag,
            "ContentLength": len(rest),
            "ContentRange": f"bytes {start}-{len(self.data) - 1}/{len(self.data)}",
        }

    def close(self) -> None:
        pass


def store_with(client: FakeClient, **fields: Any) -> S3Store:
    store = S3Store(config(access_key_id="AKIAEXAMPLE", secret_access_key=SECRET, **fields))
    store._client_ = client  # type: ignore[assignment]
    return store


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("connectors.s3.time.sleep", lambda _s: None)


def read_all(store: S3Store, path: str) -> bytes:
    with store.open(path) as fh:
        return fh.read()


def test_a_broken_body_is_resumed_and_the_bytes_are_exact() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    client = FakeClient(data, [100_000, 300_001, None])
    got = read_all(store_with(client), "rec.wav")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert [c.get("Range") for c in client.calls] == [None, "bytes=100000-", "bytes=400001-"]
    assert all(c["IfMatch"] == '"v1"' for c in client.calls[1:])


def test_a_changed_object_is_never_spliced() -> None:
    client = FakeClient(b"x" * 10_000, [4_000])
    store = store_with(client)
    with store.open("rec.wav") as fh:
        assert len(fh.read(4_000)) == 4_000
        client.etag = '"v2"'  # replaced by a new upload meanwhile
        with pytest.raises(FileVanished, match="replaced by a new version"):
            fh.read()


def test_resuming_gives_up_after_read_resume_attempts() -> None:
    client = FakeClient(b"x" * 10_000, [1_000, 0, 0, 0])
    with pytest.raises(StoreUnavailable, match="3 ranged GETs did not resume it"):
        read_all(store_with(client, read_resume_attempts=3), "rec.wav")
    assert len(client.calls) == 4


def test_attempts_count_in_a_row_progress_resets_them() -> None:
    client = FakeClient(b"y" * 10_000, [1_000, 1_000, 1_000, 1_000, 1_000, None])
    assert read_all(store_with(client, read_resume_attempts=1), "rec.wav") == b"y" * 10_000


def test_an_empty_object_reads_as_empty() -> None:
    assert read_all(store_with(FakeClient(b"", [])), "empty.csv") == b""


# -- listing ------------------------------------------------------------------------------------


class FakeLister:
    """list_objects_v2 over sorted keys, two per page; optionally refusing StartAfter."""

    def __init__(self, keys: list[str], refuse_start_after: bool) -> None:
        self.keys = sorted(keys)
        self.refuse = refuse_start_after
        self.calls: list[dict[str, Any]] = []

    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        if "StartAfter" in kw and self.refuse:
            raise client_error("InvalidArgument", 400, "bad start-after")
        keys = [k for k in self.keys if k.startswith(kw["Prefix"])]
        if "ContinuationToken" in kw:
            start = int(kw["ContinuationToken"])
        else:
            start = sum(1 for k in keys if k <= kw.get("StartAfter", ""))
        page = keys[start : start + 2]
        more = start + 2 < len(keys)
        return {
            "Contents": [
                {"Key": k, "Size": 1, "LastModified": dt.datetime.now(dt.UTC), "ETag": '"e"'}
                for k in page
            ],
            "IsTruncated": more,
            **({"NextContinuationToken": str(start + 2)} if more else {}),
        }


@pytest.mark.parametrize("refuse", [False, True])
def test_a_service_refusing_the_jump_over_a_pruned_folder_is_paged_through(refuse: bool) -> None:
    keys = ["in/a.csv", *(f"in/processed/{i}.csv" for i in range(5)), "in/z.csv"]
    lister = FakeLister(keys, refuse_start_after=refuse)
    store = S3Store(config(prefix="in"))
    store._client_ = lister  # type: ignore[assignment]
    listed = [e.path for e in store.iter_entries(lambda folder: folder == "processed")]
    assert listed == ["a.csv", "z.csv"]
    jumped = ["StartAfter" in c for c in lister.calls]
    assert jumped == ([False, True, False, False, False] if refuse else [False, True])
    if refuse:  # and it does not try again
        lister.calls.clear()
        list(store.iter_entries(lambda folder: folder == "processed"))
        assert not any("StartAfter" in c for c in lister.calls)
