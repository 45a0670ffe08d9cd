"""The S3 media store: recordings and oversized raw rows in an S3 bucket (any S3-compatible API).

Contract (the :class:`~streams.media.MediaStore` protocol; see :mod:`streams.media`):

- :meth:`S3MediaStore.put_media` refuses an unsupported name (``unsupported_media``) before any
  request. It copies the stream with bounded memory (one part of ``part_size`` bytes held at a
  time) while computing its SHA-256, and the object appears under
  ``<prefix><tenant>/<yyyy>/<mm>/<dd>/<file_id>/<name>`` only once it is complete and verified:

  * a stream shorter than one part is sent with a single ``PutObject`` carrying its SHA-256
    (S3 checks it on receipt) and the user metadata ``sha256``;
  * a longer one goes by multipart upload (each part with its own SHA-256, checked by S3) to a
    staging key under ``<prefix>.incoming/``; once complete it is copied server-side to its key
    with the metadata ``sha256`` (user metadata can only be set when an upload starts, before
    the hash is known) and ``ChecksumAlgorithm=SHA256``, so S3 computes the whole object's
    SHA-256 itself; the staging object is then deleted;
  * then ``HeadObject`` must show the size, the metadata ``sha256`` and (where S3 reports a
    whole-object checksum) the same SHA-256; otherwise the object is deleted and
    :class:`~streams.errors.MediaStoreError` ``checksum_mismatch`` (not retriable) is raised.

  Past ``max_bytes`` it aborts the multipart upload and raises ``too_large``: nothing stays
  behind. A process killed mid-copy leaves a multipart upload that was never completed (no
  object under the key); the file's outcome was not recorded, so the copy is redone on restart.
- :meth:`S3MediaStore.start` aborts multipart uploads and deletes staging objects under
  ``<prefix>.incoming/`` older than ``stale_after_seconds`` (what a killed process left). A
  bucket lifecycle rule ``AbortIncompleteMultipartUpload`` is the backstop (see the README).
- Errors: S3 outages, throttling, refused credentials and a missing bucket raise a retriable
  :class:`~streams.errors.MediaStoreError` (transient: the failure policy retries the whole copy
  until the store is back); other refusals are not retriable (a bug or misconfiguration: the
  policy retries a few times, then dead-letters ``processing_failed``). Messages name the bucket,
  key and endpoint, never a credential. Errors of the *source* stream pass through unchanged.

Blocking (boto3): call from a worker thread. One store is shared by every connector's thread
(boto3 clients are thread-safe).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import mimetypes
import threading
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from connectors import paths
from connectors.errors import ConnectorError
from connectors.s3 import S3Store
from streams.errors import MediaStoreError
from streams.media import (
    READ_BYTES,
    LocalMediaStore,
    MediaCopy,
    MediaRejected,
    MediaStore,
    StoredMedia,
    check_media_name,
    media_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from streams.settings import S3MediaSettings, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: S3's largest single copy (and so the largest object this store writes).
MAX_COPY_BYTES = 5 * 1024**3
#: Staging area for multipart uploads, under the store's prefix (tenant ids never start with .).
STAGING = ".incoming/"
#: Error codes that an operator or time fixes: retried as transient.
_TRANSIENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InternalError",
        "InvalidAccessKeyId",
        "NoSuchBucket",
        "NoSuchUpload",  # another worker's start-up clean-up aborted ours: redo the copy
        "OperationAborted",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "ServiceUnavailable",
        "SignatureDoesNotMatch",
        "SlowDown",
        "Throttling",
        "TokenRefreshRequired",
        "BadDigest",  # corrupted on the way: send again
        "XAmzContentSHA256Mismatch",
    }
)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3MediaStore:
    """A media store in an S3 bucket (see the module doc)."""

    def __init__(self, config: S3MediaSettings) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.key_prefix
        self.endpoint = config.endpoint
        self.max_bytes = config.max_bytes
        self.part_size = config.part_size_bytes
        self.stale_after = dt.timedelta(minutes=config.stale_upload_minutes)
        self.checksums = config.checksums
        self._session = S3Store(config)  # the S3 connector's client and credential handling
        self._client_: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        """The boto3 client, built (and the bucket checked) on first use."""
        with self._lock:
            if self._client_ is None:
                try:
                    self._session.connect()
                except ConnectorError as exc:
                    # Outage, refused credentials, missing bucket: an operator or time fixes it.
                    raise MediaStoreError(
                        f"media store: {exc}", retriable=True, code=exc.kind
                    ) from exc
                self._client_ = self._session._client()
            return self._client_

    def close(self) -> None:
        """Drop the client and its connections."""
        with self._lock:
            self._client_ = None
            self._session.close()

    @property
    def staging_prefix(self) -> str:
        """Where multipart uploads are staged before they are copied to their key."""
        return self.prefix + STAGING

    # ------------------------------------------------------------------ the protocol

    def put_media(
        self, tenant: str, file_id: str, name: str, stream: IO[bytes], *, when: dt.datetime
    ) -> StoredMedia:
        """Copy a recording (see the module doc)."""
        check_media_name(name)
        key = media_key(tenant, file_id, name, when)
        copy = MediaCopy(name, self.max_bytes)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        uri = self._store(key, stream, copy, content_type)
        return copy.stored(key, uri)

    def put(self, key: str, stream: IO[bytes]) -> tuple[str, str]:
        """Copy ``stream`` to ``key``; return ``(key, sha256 hex)``."""
        key = paths.normalize(key)
        copy = MediaCopy(key, MAX_COPY_BYTES)
        self._store(key, stream, copy, "application/octet-stream")
        return key, copy.sha256

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; return the key."""
        key = paths.normalize(key)
        digest = hashlib.sha256(data).digest()
        full = self.prefix + key
        self._call(
            "storing",
            full,
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                Metadata={"sha256": digest.hex()},
                **self._checksum(digest),
            ),
        )
        self._verify(full, len(data), digest.hex())
        return key

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """Return the object under ``key``, at most ``max_bytes`` long."""
        full = self.prefix + paths.normalize(key)

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return bytes(body.read(max_bytes + 1))
            finally:
                body.close()

        data = self._call("reading", full, read)
        if len(data) > max_bytes:
            raise MediaRejected("too_large", f"{key} is larger than {max_bytes} bytes")
        return data

    def open_read(self, key: str) -> IO[bytes]:
        """Open the object under ``key`` for streaming (the caller closes it);
        FileNotFoundError when there is none."""
        full = self.prefix + paths.normalize(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{full}") from exc
            raise self._error("reading", full, exc) from exc
        except BotoCoreError as exc:
            raise self._error("reading", full, exc) from exc
        return body  # type: ignore[return-value]  # a StreamingBody: read(n) and close()

    def delete(self, key: str) -> None:
        """Delete the object under ``key`` (S3 answers success when there is none)."""
        self._delete(self.prefix + paths.normalize(key))

    # ------------------------------------------------------------------ start-up clean-up

    def start(self) -> None:
        """Abort what killed processes left behind (see the module doc); log, never raise for
        an unreachable store (the copies then fail and retry on their own)."""
        try:
            uploads, objects = self.abort_stale_uploads()
        except MediaStoreError as exc:
            log.warning("media store: could not clean up stale uploads: %s", exc)
            return
        if uploads or objects:
            log.info(
                "media store: aborted %d stale multipart upload(s) and deleted %d staging "
                "object(s) under s3://%s/%s",
                uploads,
                objects,
                self.bucket,
                self.staging_prefix,
            )

    def _list_all(self, what: str, operation: str, field: str, where: str) -> list[Any]:
        """Every item of ``field`` in every page of a listing ``operation`` under ``where``."""

        def listing() -> list[Any]:
            pages = self.client.get_paginator(operation).paginate(  # type: ignore[call-overload]
                Bucket=self.bucket, Prefix=where
            )
            return [item for page in pages for item in page.get(field, [])]

        return self._call(what, where, listing)

    def abort_stale_uploads(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Abort multipart uploads and delete staging objects under the staging prefix that
        are older than ``stale_after_seconds``; return how many of each."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - self.stale_after
        where = self.staging_prefix
        aborted = deleted = 0
        uploads = self._list_all(
            "listing multipart uploads under", "list_multipart_uploads", "Uploads", where
        )
        for upload in uploads:
            if upload["Initiated"] < cutoff:
                self._abort(upload["Key"], upload["UploadId"])
                aborted += 1
        objects = self._list_all(
            "listing staging objects under", "list_objects_v2", "Contents", where
        )
        for obj in objects:
            if obj["LastModified"] < cutoff:
                self._delete(obj["Key"])
                deleted += 1
        return aborted, deleted

    # ------------------------------------------------------------------ copying

    def _read_part(self, stream: IO[bytes], copy: MediaCopy) -> bytes:
        """Read up to one part from ``stream`` (shorter only at its end)."""
        chunks: list[bytes] = []
        left = self.part_size
        while left and (chunk := copy.read(stream, min(READ_BYTES, left))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _store(self, key: str, stream: IO[bytes], copy: MediaCopy, content_type: str) -> str:
        """Upload ``stream`` to ``key`` (see the module doc); return its ``s3://`` URI."""
        full = self.prefix + key
        part = self._read_part(stream, copy)
        if len(part) < self.part_size:
            digest = copy.digest.digest()
            self._call(
                "storing",
                full,
                lambda: self.client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=part,
                    ContentType=content_type,
                    Metadata={"sha256": digest.hex()},
                    **self._checksum(digest),
                ),
            )
        else:
            staging = f"{self.staging_prefix}{key}.{uuid.uuid4().hex[:12]}"
            self._multipart(staging, part, stream, copy)
            try:
                self._call(
                    "copying the finished upload to",
                    full,
                    lambda: self.client.copy_object(
                        Bucket=self.bucket,
                        Key=full,
                        CopySource={"Bucket": self.bucket, "Key": staging},
                        MetadataDirective="REPLACE",
                        ContentType=content_type,
                        Metadata={"sha256": copy.sha256},
                        **self._checksum(),
                    ),
                )
            finally:
                self._quietly(
                    "deleting staging object",
                    staging,
                    lambda: self.client.delete_object(Bucket=self.bucket, Key=staging),
                )
        self._verify(full, copy.size, copy.sha256)
        return f"s3://{self.bucket}/{full}"

    def _multipart(self, staging: str, part: bytes, stream: IO[bytes], copy: MediaCopy) -> None:
        """Upload ``part`` and the rest of ``stream`` as a multipart upload to ``staging`` and
        complete it; abort it on any error (``too_large`` included)."""
        created = self._call(
            "starting a multipart upload to",
            staging,
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=staging, **self._checksum()
            ),
        )
        upload_id = created["UploadId"]
        done: list[Any] = []
        try:
            number = 1
            while part:
                done.append(self._upload_part(staging, upload_id, number, part))
                part = b""  # let the part go before the next one is read
                part = self._read_part(stream, copy)
                number += 1
            self._call(
                "completing the multipart upload to",
                staging,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=staging,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                ),
            )
        except BaseException:
            self._abort(staging, upload_id, quiet=True)
            raise

    def _upload_part(self, staging: str, upload_id: str, number: int, part: bytes) -> Any:
        """Upload one part with its SHA-256 (S3 checks it); return its entry for completion."""
        digest = hashlib.sha256(part).digest() if self.checksums else None
        sent = self._call(
            f"uploading part {number} of",
            staging,
            lambda: self.client.upload_part(
                Bucket=self.bucket,
                Key=staging,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
                **self._checksum(digest),
            ),
        )
        entry = {"PartNumber": number, "ETag": sent["ETag"]}
        if digest is not None:
            entry["ChecksumSHA256"] = _b64(digest)
        return entry

    def _checksum(self, digest: bytes | None = None) -> dict[str, Any]:
        """The checksum parameters of a request (none when ``checksums`` is off)."""
        if not self.checksums:
            return {}
        if digest is None:
            return {"ChecksumAlgorithm": "SHA256"}
        return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(digest)}

    def _verify(self, full: str, size: int, sha256: str) -> None:
        """Check the stored object against what was read; delete it and raise if it differs."""
        mode: dict[str, Any] = {"ChecksumMode": "ENABLED"} if self.checksums else {}
        head = self._call(
            "checking",
            full,
            lambda: self.client.head_object(Bucket=self.bucket, Key=full, **mode),
        )
        problems = []
        if head["ContentLength"] != size:
            problems.append(f"size {head['ContentLength']} instead of {size}")
        stored = head.get("Metadata", {}).get("sha256")
        if stored != sha256:
            problems.append(f"metadata sha256 {stored!r} instead of {sha256}")
        checksum = head.get("ChecksumSHA256")
        expected = _b64(bytes.fromhex(sha256))
        if checksum and "-" not in checksum and checksum != expected:
            problems.append(f"S3's SHA-256 {checksum} instead of {expected}")
        if problems:
            self._quietly(
                "deleting the mismatched object",
                full,
                lambda: self.client.delete_object(Bucket=self.bucket, Key=full),
            )
            raise MediaStoreError(
                f"s3://{self.bucket}/{full} at {self.endpoint} does not match what was copied: "
                + "; ".join(problems),
                retriable=False,
                code="checksum_mismatch",
            )

    def _delete(self, key: str) -> None:
        self._call("deleting", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def _abort(self, key: str, upload_id: str, *, quiet: bool = False) -> None:
        def abort() -> object:
            return self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )

        if quiet:
            self._quietly("aborting the multipart upload to", key, abort)
        else:
            self._call("aborting the multipart upload to", key, abort)

    # ------------------------------------------------------------------ errors

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 request; translate its failure (see the module doc)."""
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(what, key, exc) from exc

    def _quietly(self, what: str, key: str, fn: Callable[[], object]) -> None:
        """Run a clean-up request whose failure must not hide the error being raised; log it
        (what it leaves behind is removed by :meth:`start` or the lifecycle rule)."""
        try:
            fn()
        except (ClientError, BotoCoreError) as exc:
            log.warning("%s", self._error(what, key, exc))

    def _error(self, what: str, key: str, exc: ClientError | BotoCoreError) -> MediaStoreError:
        where = f"{what} s3://{self.bucket}/{key} at {self.endpoint}"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = err.get("Message") or str(exc)
            retriable = code in _TRANSIENT_CODES or status >= 500
            return MediaStoreError(f"{where}: {code}: {message}", retriable=retriable, code=code)
        retriable = isinstance(
            exc,
            BotoConnectionError
            | HTTPClientError
            | NoCredentialsError
            | PartialCredentialsError
            | CredentialRetrievalError,
        )
        return MediaStoreError(
            f"{where}: {type(exc).__name__}: {exc}", retriable=retriable, code=type(exc).__name__
        )


def open_media_store(settings: Settings) -> MediaStore:
    """Build the configured media store (``media`` settings); nothing is contacted yet."""
    media = settings.media
    if media.type == "local":
        return LocalMediaStore(settings.media_root, media.max_bytes)
    return S3MediaStore(media)
