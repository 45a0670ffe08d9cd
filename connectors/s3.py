"""S3 file store (boto3): AWS S3 and any S3-compatible service (MinIO, Ceph, GCS interop).

The connector's root is ``s3://<bucket>/<prefix>/``; connector-relative paths are the keys below
it. Listings page through ``ListObjectsV2`` under the prefix (1,000 keys a request); "folder"
placeholder keys (ending in ``/``, empty) are not files and are ignored; keys that are not safe
connector-relative paths (a control character, an empty, ``.`` or ``..`` segment, a leading
``/``, too long) are listed as ``unsafe_name``. A pruned folder is not paged through: when a
page ends inside one, the listing starts again after its last possible key, so ``processed/``
costs at most one request however many objects it holds (a service that refuses that
``StartAfter`` is paged through instead). S3 has no symlinks or special files.

Version identity: size, ``LastModified`` (whole seconds, as ``HeadObject`` reports it) and the
``ETag``. An object is visible only once its upload is complete (a multipart upload appears when
it is completed), so an upload in progress is never listed.

Reads stream the object's body with bounded memory. When the body breaks mid-read (a reset
connection, a stall longer than ``read_timeout_seconds``), the read resumes where it stopped
with a ranged GET (``Range: bytes=N-``) pinned to the ETag first read (``If-Match``); an
object that was replaced or deleted meanwhile raises
:class:`~connectors.errors.FileVanished` instead of splicing two versions.

S3 has no rename: ``move`` is a server-side copy (boto3's managed copy: one ``CopyObject`` up to
5 GiB, a multipart copy above, which S3 needs for larger objects) then a delete. The copy's
``LastModified`` is the time of the move, so to keep rename semantics (clean-up watches a moved
file and moves it back if it changes) the copy carries the source's mtime in its metadata
(``x-amz-meta-callstream-mtime``) and :meth:`S3Store.stat` reports it for objects in the folders
the last listing pruned (``processed/``, ``invalid/``). Everywhere a listing looks, ``stat``
reports ``LastModified`` exactly as the listing does, so the version a listing announced is
the version ``stat`` reports.

Errors are translated into :mod:`connectors.errors` with a message that names what was being
done, the bucket and the endpoint, and never a secret.

A store built with an :class:`~connectors.netguard.AddressGuard` (connectors created through the
API) opens every connection to an address the guard checked, through per-client urllib3 pool
classes, and ignores environment proxies (see :mod:`connectors.netguard` for how and why).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mimetypes
import re
import time
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Self

import boto3
import botocore.exceptions as bx
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors import paths
from connectors.base import Prune, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConnectorError,
    FileVanished,
    RequestRefused,
    StoreNotFound,
    StoreUnavailable,
    TargetExists,
    UnsafePath,
)
from connectors.netguard import AddressGuard, guard_botocore_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger(__name__)

MTIME_METADATA = "callstream-mtime"
"""User metadata a moved object carries: the source's mtime (seconds since the epoch)."""

_MULTIPART_COPY_THRESHOLD = 5 * 1024**3  # CopyObject's limit: one request up to here
_MULTIPART_COPY_CHUNK = 512 * 1024**2  # 10,000 parts of this cover S3's 5 TiB maximum
_UPLOAD_PART = 8 * 1024**2  # parts of a streamed upload: 10,000 of them hold 78 GiB
_ANSWERED = types.SimpleNamespace(status_code=200, headers={})  # see S3Store.request_url
_LAST_CHAR = "\U0010ffff"  # sorts after every character a key can hold
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,221}[A-Za-z0-9]$")

# A body that breaks mid-read: botocore wraps urllib3's errors in the first three.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    bx.ResponseStreamingError,
    bx.ReadTimeoutError,
    bx.IncompleteReadError,
    bx.HTTPClientError,
    bx.ConnectionError,
    urllib3.exceptions.HTTPError,
    OSError,
)
_CREDENTIAL_ERRORS: tuple[type[BaseException], ...] = (
    bx.NoCredentialsError,
    bx.PartialCredentialsError,
    bx.CredentialRetrievalError,
)
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId": "the endpoint does not know access key id {key_id} ({code})",
    "InvalidClientTokenId": "the endpoint does not know access key id {key_id} ({code})",
    "SignatureDoesNotMatch": (
        "the request signature was rejected ({code}): secret_access_key does not belong to "
        "access key id {key_id}"
    ),
    "AuthorizationHeaderMalformed": "the endpoint refused the authorization header ({code})",
    "ExpiredToken": "the session token has expired ({code})",
    "InvalidToken": "the session token is not valid ({code})",
    "TokenRefreshRequired": "the session token has expired ({code})",
    "MissingSecurityHeader": "the request was not signed ({code})",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
_UNAVAILABLE = {"ServiceUnavailable", "InternalError", "RequestTimeout", "BadGateway"}
_CONTENT_HEADERS = (
    "ContentType",
    "ContentEncoding",
    "ContentDisposition",
    "ContentLanguage",
    "CacheControl",
)


class S3Config(BaseModel):
    """One bucket (and optionally a prefix in it) on AWS S3 or any S3-compatible service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["s3"] = "s3"
    bucket: str = Field(description="Bucket name.", examples=["acme-contact-centre"])
    prefix: str = Field(
        "",
        description="Folder in the bucket files arrive under (the connector's root); "
        "'' = the whole bucket. Leading and trailing '/' are ignored.",
        examples=["exports/daily"],
    )
    region: str = Field(
        "us-east-1",
        description="Region of the bucket (signs requests); 'auto' for GCS.",
        examples=["eu-west-1", "auto"],
    )
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, Ceph, GCS: https://storage.googleapis.com). "
        "Unset: AWS S3.",
        examples=["https://storage.googleapis.com", "http://minio.internal:9000"],
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description="'path' puts the bucket in the URL path (MinIO, Ceph and most S3-compatible "
        "services, GCS); 'virtual' in the host name; 'auto' lets boto3 choose.",
    )
    access_key_id: str | None = Field(
        None,
        description="Access key id (an HMAC key's access id for GCS). Unset together with "
        "secret_access_key: boto3's default credential chain (environment, shared config "
        "files, web identity, container or instance role).",
        examples=["AKIAIOSFODNN7EXAMPLE", "GOOG1EXAMPLE"],
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret of access_key_id (never logged or shown)."
    )
    session_token: SecretStr | None = Field(
        None, description="Session token of temporary credentials (with both keys)."
    )
    ca_bundle: Path | None = Field(
        None, description="PEM file of CA certificates for an endpoint with a private CA."
    )
    connect_timeout_seconds: float = Field(
        10.0, gt=0, description="Limit for opening a connection to the endpoint."
    )
    read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait for any reply or for more bytes of an object being read; a "
        "read that stalls longer resumes with a ranged GET.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Attempts per request (boto3 'standard' retries: throttling, 5xx, "
        "connection errors), first included.",
    )
    read_resume_attempts: int = Field(
        5,
        ge=0,
        le=100,
        description="Ranged GETs tried in a row to resume a read whose body broke, before the "
        "read fails as 'store unavailable' (0: never resume).",
    )

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value):
            raise ValueError(
                "bucket must be 3-223 letters, digits, '.', '_' or '-', starting and ending "
                "with a letter or digit"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _normal_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value:
            return ""
        try:
            return paths.normalize(value)
        except UnsafePath as exc:
            raise ValueError(f"prefix: {exc}") from exc

    @field_validator("endpoint_url")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "@" in value:
            raise ValueError(
                "endpoint_url must not carry credentials: use access_key_id and secret_access_key"
            )
        url = urllib.parse.urlsplit(value)
        try:
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("endpoint_url has a port that is not a number") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("endpoint_url must be an http:// or https:// URL with a host")
        if url.query or url.fragment:
            raise ValueError("endpoint_url must not have a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _both_keys_or_neither(self) -> Self:
        if self.access_key_id is not None and self.secret_access_key is None:
            raise ValueError(
                "secret_access_key is missing: set it with access_key_id, or unset both to use "
                "the default credential chain"
            )
        if self.secret_access_key is not None and self.access_key_id is None:
            raise ValueError(
                "access_key_id is missing: set it with secret_access_key, or unset both to use "
                "the default credential chain"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError(
                "session_token needs access_key_id and secret_access_key (temporary "
                "credentials come as all three)"
            )
        return self

    @property
    def key_prefix(self) -> str:
        """The prefix every key of the root starts with ('' or ending in '/')."""
        return f"{self.prefix}/" if self.prefix else ""

    @property
    def endpoint(self) -> str:
        """The endpoint for messages: the configured URL, or AWS and the region."""
        return self.endpoint_url or f"AWS S3 {self.region}"


def _seconds(value: Any) -> float:
    """Whole seconds since the epoch of a timestamp (listings may carry milliseconds)."""
    return float(math.floor(value.timestamp()))


def _etag(value: str) -> str:
    return value.strip('"')


class S3Store:
    """A :class:`~connectors.base.FileStore` over one bucket and prefix (see the module doc)."""

    def __init__(self, config: S3Config, guard: AddressGuard | None = None) -> None:
        self.config = config
        self.guard = guard
        self.description = f"s3://{config.bucket}/{config.key_prefix} (endpoint {config.endpoint})"
        self._prefix = config.key_prefix
        self._client_: S3Client | None = None
        self._unlisted: Prune | None = None
        self._page_size = 1000  # S3's largest page
        self._jumps = True  # False once a service refused a StartAfter jump
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_COPY_THRESHOLD,
            multipart_chunksize=_MULTIPART_COPY_CHUNK,
            max_concurrency=4,
        )
        self._upload = TransferConfig(
            multipart_threshold=_UPLOAD_PART,
            multipart_chunksize=_UPLOAD_PART,
            max_concurrency=2,
            max_io_queue=4,
        )

    # -- session -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Build the client and check that the bucket answers a listing with these credentials."""
        client = self.open_client()
        try:
            client.list_objects_v2(Bucket=self.config.bucket, Prefix=self._prefix, MaxKeys=1)
        except (bx.BotoCoreError, bx.ClientError) as exc:
            self.close()
            raise self._translate("connecting to", exc) from exc

    def open_client(self) -> S3Client:
        """Build the client without sending anything (``connect`` also checks the bucket).

        With a guard, every connection the client opens goes to an address the guard checked
        (see :mod:`connectors.netguard`) and environment proxies are not used.
        """
        self.close()
        cfg = self.config
        secret = cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None
        token = cfg.session_token.get_secret_value() if cfg.session_token else None
        botocore_config = Config(
            region_name=cfg.region,
            signature_version="s3v4",
            connect_timeout=cfg.connect_timeout_seconds,
            read_timeout=cfg.read_timeout_seconds,
            # botocore reads max_attempts as retries after the first; ours counts the first too.
            retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
            s3={"addressing_style": cfg.addressing_style},
            tcp_keepalive=True,
            # Integrity comes from ETags and If-Match; the newer default checksum headers are
            # refused by several S3-compatible services (GCS among them).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="callstream",
            # Through a proxy the proxy resolves the name: the guard could not check it.
            proxies={} if self.guard is not None else None,
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=cfg.access_key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
                region_name=cfg.region,
            )
            client = session.client(
                "s3",
                endpoint_url=cfg.endpoint_url,
                verify=str(cfg.ca_bundle) if cfg.ca_bundle is not None else None,
                config=botocore_config,
            )
        except (bx.BotoCoreError, ValueError) as exc:
            raise self._translate("connecting to", exc) from exc
        if self.guard is not None:
            try:
                guard_botocore_client(client, self.guard)
            except RuntimeError as exc:
                client.close()
                raise ConnectorError(f"connecting to {self.description}: {exc}") from exc
        self._client_ = client
        return client

    def request_url(self) -> str:
        """Return the URL a request about the bucket goes to; nothing is sent or signed.

        Endpoint resolution is botocore's own: the configured endpoint, or AWS's for the
        region, with the bucket in the host name when virtual addressing applies. A
        ``before-call`` handler answers the request in place of the network (as botocore's
        Stubber does), so no credentials are looked up either.
        """
        cfg = self.config
        config = Config(
            region_name=cfg.region,
            signature_version=UNSIGNED,
            s3={"addressing_style": cfg.addressing_style},
        )
        urls: list[str] = []

        def capture(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
            urls.append(str(params["url"]))
            return _ANSWERED, {}

        try:
            client = boto3.session.Session(region_name=cfg.region).client(
                "s3", endpoint_url=cfg.endpoint_url, config=config
            )
            try:
                # The stubs type handlers as returning None; before-call ones may answer.
                client.meta.events.register("before-call.s3.HeadBucket", capture)  # type: ignore[arg-type]
                client.head_bucket(Bucket=cfg.bucket)
            finally:
                client.close()
        except (bx.BotoCoreError, bx.ClientError, ValueError) as exc:
            raise self._translate("resolving the endpoint of", exc) from exc
        return urls[0]

    def head_bucket(self) -> str | None:
        """Check that the bucket exists and these credentials may use it; return its region
        when the service says (``x-amz-bucket-region``).

        A HEAD error carries no error code, so on a refusal the same question is asked again
        as a one-key listing, whose error tells a bad key id, a bad secret and a policy apart.
        """
        client = self._client()
        bucket = self.config.bucket
        try:
            response = client.head_bucket(Bucket=bucket)
        except (bx.BotoCoreError, bx.ClientError) as exc:
            error = self._translate("checking", exc)
            if isinstance(exc, bx.ClientError) and not isinstance(error, StoreNotFound):
                try:
                    client.list_objects_v2(Bucket=bucket, MaxKeys=1)
                except (bx.BotoCoreError, bx.ClientError) as coded:
                    raise self._translate("checking", coded) from coded
            raise error from exc
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region")
        return str(region) if region else None

    def first_key(self) -> str | None:
        """Return the first key under the prefix (relative to it), or None if there is none."""
        try:
            page = self._client().list_objects_v2(
                Bucket=self.config.bucket, Prefix=self._prefix, MaxKeys=1
            )
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._translate("listing", exc) from exc
        objects = page.get("Contents", [])
        return objects[0]["Key"][len(self._prefix) :] if objects else None

    def close(self) -> None:
        """Drop the client and its connections; safe to call at any time."""
        client, self._client_ = self._client_, None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self) -> S3Client:
        if self._client_ is None:
            raise StoreUnavailable(f"no open session to {self.description}")
        return self._client_

    def _key(self, path: str) -> str:
        return self._prefix + paths.normalize(path)

    # -- errors --------------------------------------------------------------------------------

    def _translate(
        self, what: str, exc: BaseException, *, path: str | None = None
    ) -> ConnectorError:
        """Return the connector error for a boto3 failure while doing ``what`` (a phrase that
        the store's description completes: "listing", "reading 'a.csv' in")."""
        where = f"{what} {self.description}"
        if isinstance(exc, ConnectorError):
            return exc
        cause = exc.kwargs.get("error") if isinstance(exc, bx.BotoCoreError) else None
        if isinstance(cause, ConnectorError):  # the address guard refused the connection
            return cause
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return AuthenticationFailed(
                f"{where}: no usable credentials: access_key_id and secret_access_key are unset "
                f"and boto3's default credential chain found none ({type(exc).__name__}: "
                f"{self._scrub(str(exc))})"
            )
        if isinstance(exc, bx.ClientError):
            return self._client_error(where, exc, path)
        if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError):
            return StoreUnavailable(f"{where}: endpoint unreachable: {self._scrub(str(exc))}")
        return ConnectorError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    def _client_error(self, where: str, exc: bx.ClientError, path: str | None) -> ConnectorError:
        error: Mapping[str, Any] = exc.response.get("Error", {})
        meta: Mapping[str, Any] = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status or "unknown")
        message = self._scrub(str(error.get("Message") or ""))
        detail = f"{code}: {message}" if message else code
        bucket = self.config.bucket
        if code in _BAD_CREDENTIALS:
            key_id = repr(self.config.access_key_id) if self.config.access_key_id else "(chain)"
            text = _BAD_CREDENTIALS[code].format(code=detail, key_id=key_id)
            return AuthenticationFailed(f"{where}: {text}")
        if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden", "403"):
            return AccessDenied(
                f"{where}: access denied to bucket {bucket!r} ({detail}): the credentials are "
                "valid but a policy does not allow this request"
            )
        if code == "NoSuchBucket" or (status == 404 and path is None):
            return StoreNotFound(f"{where}: bucket {bucket!r} does not exist ({detail})")
        if code in ("NoSuchKey", "404") or status == 404:
            return FileVanished(f"{where}: {path!r} is no longer there ({detail})")
        if code == "PreconditionFailed" or status == 412:
            return FileVanished(f"{where}: {path!r} was replaced by a new version ({detail})")
        if code in ("PermanentRedirect", "IllegalLocationConstraintException") or status == 301:
            return AuthenticationFailed(
                f"{where}: the bucket is in another region than {self.config.region!r} ({detail})"
            )
        if code in _THROTTLED or code in _UNAVAILABLE or status >= 500 or status == 429:
            return StoreUnavailable(f"{where}: {detail}")
        return RequestRefused(f"{where}: {detail}")

    def _scrub(self, text: str) -> str:
        """Remove the configured secrets from a message (servers never echo them; be sure)."""
        for secret in (self.config.secret_access_key, self.config.session_token):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "**********")
        return text

    # -- listing -------------------------------------------------------------------------------

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]:
        """List every object under the prefix, in key order (see the module doc)."""
        self._unlisted = prune
        client = self._client()
        decided: dict[str, bool] = {}
        page_from: dict[str, str] = {}
        token = ""
        while True:
            try:
                page = client.list_objects_v2(
                    Bucket=self.config.bucket,
                    Prefix=self._prefix,
                    MaxKeys=self._page_size,
                    **page_from,  # type: ignore[arg-type]
                )
            except (bx.BotoCoreError, bx.ClientError) as exc:
                error = self._translate("listing", exc)
                if "StartAfter" in page_from and isinstance(error, RequestRefused):
                    # A service that refuses our jump: page through pruned folders instead.
                    log.warning("%s; paging through pruned folders from now on", error)
                    self._jumps = False
                    page_from = {"ContinuationToken": token}
                    continue
                raise error from exc
            objects = page.get("Contents", [])
            inside = None  # the pruned folder the page ended in
            for obj in objects:
                key = obj["Key"]
                rel = key[len(self._prefix) :]
                inside = self._pruned_folder(rel, prune, decided)
                if inside is not None:
                    continue
                if not rel or (rel.endswith("/") and obj.get("Size", 0) == 0):
                    continue  # a "folder" placeholder
                if not paths.is_safe_path(rel):
                    yield SkippedEntry(rel, SkipReason.UNSAFE_NAME, paths.unsafe_reason(rel))
                    continue
                yield RemoteFile(
                    rel, obj["Size"], _seconds(obj["LastModified"]), _etag(obj["ETag"])
                )
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]
            after = f"{self._prefix}{inside}/{_LAST_CHAR}" if inside is not None else ""
            if self._jumps and after and objects and after > objects[-1]["Key"]:
                page_from = {"StartAfter": after}  # jump over the rest of the pruned folder
            else:
                page_from = {"ContinuationToken": token}

    @staticmethod
    def _pruned_folder(rel: str, prune: Prune | None, decided: dict[str, bool]) -> str | None:
        """Return the outermost folder of ``rel`` that ``prune`` excludes, if any."""
        if prune is None:
            return None
        at = rel.find("/")
        while at != -1:
            folder = rel[:at]
            excluded = decided.get(folder)
            if excluded is None:
                excluded = decided[folder] = prune(folder)
            if excluded:
                return folder
            at = rel.find("/", at + 1)
        return None

    def _in_unlisted_folder(self, path: str) -> bool:
        prune = self._unlisted
        return prune is not None and self._pruned_folder(path, prune, {}) is not None

    # -- single objects ------------------------------------------------------------------------

    def _head(self, what: str, path: str) -> HeadObjectOutputTypeDef | None:
        try:
            return self._client().head_object(Bucket=self.config.bucket, Key=self._key(path))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            error = self._translate(what, exc, path=path)
            if isinstance(error, FileVanished):
                return None
            raise error from exc

    def _version(self, path: str, head: HeadObjectOutputTypeDef) -> RemoteFile:
        """The version ``head`` describes, with the mtime a listing reports (see module doc)."""
        mtime = _seconds(head["LastModified"])
        kept = head.get("Metadata", {}).get(MTIME_METADATA)
        if kept is not None and self._in_unlisted_folder(path):
            with contextlib.suppress(ValueError):
                mtime = float(int(kept))
        return RemoteFile(path, head["ContentLength"], mtime, _etag(head["ETag"]))

    def stat(self, path: str) -> RemoteFile | None:
        """Return the current version of an object, or None if there is none."""
        path = paths.normalize(path)
        head = self._head(f"stat {path!r} in", path)
        return None if head is None else self._version(path, head)

    def open(self, path: str) -> BinaryIO:
        """Open an object for a streaming read that resumes with ranged GETs (module doc)."""
        path = paths.normalize(path)
        what = f"reading {path!r} in"
        try:
            response = self._client().get_object(Bucket=self.config.bucket, Key=self._key(path))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._translate(what, exc, path=path) from exc
        reader = _ResumingReader(
            self, path, response["Body"], response["ETag"], response["ContentLength"]
        )
        return io.BufferedReader(reader, buffer_size=1024 * 1024)

    def _ranged_get(self, path: str, start: int, etag: str) -> Any:
        """Return the body of ``path`` from byte ``start`` if it is still version ``etag``."""
        try:
            response = self._client().get_object(
                Bucket=self.config.bucket,
                Key=self._key(path),
                Range=f"bytes={start}-",
                IfMatch=etag,
            )
        except (bx.BotoCoreError, bx.ClientError) as exc:
            what = f"resuming the read of {path!r} at byte {start} in"
            raise self._translate(what, exc, path=path) from exc
        content_range = response.get("ContentRange", "")
        if not content_range.startswith(f"bytes {start}-"):
            response["Body"].close()
            raise StoreUnavailable(
                f"resuming the read of {path!r} on {self.description}: asked for bytes {start}- "
                f"and got {content_range or 'the whole object'}"
            )
        return response["Body"]

    # -- clean-up ------------------------------------------------------------------------------

    def move(self, src: str, dst: str, *, replace: bool = True) -> None:
        """Copy ``src`` to ``dst`` on the server, then delete ``src`` (see the module doc).

        ``replace=False`` checks the target first and raises
        :class:`~connectors.errors.TargetExists` if it is taken: S3 cannot refuse a copy onto
        an existing key, so a writer racing that check wins.
        """
        src, dst = paths.normalize(src), paths.normalize(dst)
        what = f"moving {src!r} to {dst!r} in"
        head = self._head(what, src)
        if head is None:
            raise FileVanished(f"{what} {self.description}: {src!r} is no longer there")
        if not replace and self._head(what, dst) is not None:
            raise TargetExists(f"{what} {self.description}: {dst!r} already exists")
        source = self._version(src, head)
        extra: dict[str, Any] = {
            key: head[key]  # type: ignore[literal-required]
            for key in _CONTENT_HEADERS
            if head.get(key)
        }
        extra["Metadata"] = {
            **head.get("Metadata", {}),
            MTIME_METADATA: str(int(source.mtime)),
        }
        extra["MetadataDirective"] = "REPLACE"
        extra["CopySourceIfMatch"] = head["ETag"]
        client = self._client()
        bucket = self.config.bucket
        try:
            client.copy(
                {"Bucket": bucket, "Key": self._key(src)},
                bucket,
                self._key(dst),
                ExtraArgs=extra,
                Config=self._transfer,
            )
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._translate(what, exc, path=src) from exc
        try:
            client.delete_object(Bucket=bucket, Key=self._key(src))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            error = self._translate(what, exc, path=src)
            error.args = (f"{error} (the copy at {dst!r} was made; {src!r} is still there)",)
            raise error from exc

    def write(self, path: str, src: BinaryIO, *, replace: bool = True) -> RemoteFile:
        """Upload ``src`` as the object ``path`` under the prefix (see the protocol).

        boto3's managed upload streams it: one ``PutObject`` up to 8 MiB, a multipart upload
        of 8 MiB parts above (at most a few parts in memory at once). The object appears only
        when the upload completes; a failed multipart upload is aborted. ``replace=False``
        checks the key first (S3 cannot refuse a put onto an existing key: a writer racing
        that check wins). ``Content-Type`` is guessed from the name.
        """
        path = paths.normalize(path)
        what = f"writing {path!r} in"
        if not replace and self._head(what, path) is not None:
            raise TargetExists(f"{what} {self.description}: {path!r} already exists")
        extra: dict[str, Any] = {}
        content_type, _ = mimetypes.guess_type(path)
        if content_type:
            extra["ContentType"] = content_type
        sent = [0]

        def count(n: int) -> None:  # progress: bytes sent (negative when a part is retried)
            sent[0] += n

        try:
            self._client().upload_fileobj(
                src,
                self.config.bucket,
                self._key(path),
                ExtraArgs=extra,
                Callback=count,
                Config=self._upload,
            )
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._translate(what, exc, path=path) from exc
        except OSError as exc:  # reading the source
            raise ConnectorError(f"{what} {self.description}: {exc}") from exc
        try:
            head = self._head(what, path)
        except AccessDenied:  # a write-only key (exports): what was sent is what was stored
            return RemoteFile(path, sent[0], float(math.floor(time.time())))
        if head is None:
            raise FileVanished(f"{what} {self.description}: {path!r} is gone after its upload")
        return RemoteFile(
            path, head["ContentLength"], _seconds(head["LastModified"]), _etag(head["ETag"])
        )

    def delete(self, path: str) -> None:
        """Delete an object; deleting one that is not there is not an error."""
        path = paths.normalize(path)
        try:
            self._client().delete_object(Bucket=self.config.bucket, Key=self._key(path))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            error = self._translate(f"deleting {path!r} in", exc, path=path)
            if not isinstance(error, FileVanished):
                raise error from exc


class _ResumingReader(io.RawIOBase):
    """An object's body, read in order; a broken body is resumed with a ranged GET."""

    def __init__(self, store: S3Store, path: str, body: Any, etag: str, size: int) -> None:
        self._store = store
        self._path = path
        self._body = body
        self._etag = etag
        self._pos = 0
        self.size = size
        self._failures = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self._pos)
        if want <= 0:
            return 0
        while True:
            try:
                data = self._body.read(want)
            except _STREAM_ERRORS as exc:
                self._resume(exc)
                continue
            if not data:
                self._resume(EOFError(f"the body ended at byte {self._pos} of {self.size}"))
                continue
            n = len(data)
            view[:n] = data
            self._pos += n
            self._failures = 0
            return n

    def _resume(self, cause: BaseException) -> None:
        """Replace the broken body with a ranged GET from the current position."""
        store = self._store
        limit = store.config.read_resume_attempts
        where = f"reading {self._path!r} in {store.description}"
        with contextlib.suppress(*_STREAM_ERRORS):
            self._body.close()
        while True:
            self._failures += 1
            if self._failures > limit:
                raise StoreUnavailable(
                    f"{where}: the download broke at byte {self._pos} of {self.size} "
                    f"and {limit} ranged GETs did not resume it: {cause}"
                ) from cause
            log.warning(
                "%s: the download broke at byte %d of %d (%s); resuming with a ranged GET",
                where,
                self._pos,
                self.size,
                cause,
            )
            time.sleep(min(0.2 * 2 ** (self._failures - 1), 5.0))
            try:
                self._body = store._ranged_get(self._path, self._pos, self._etag)
                return
            except StoreUnavailable as exc:
                cause = exc

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*_STREAM_ERRORS):
                self._body.close()
        super().close()
