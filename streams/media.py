"""The media store: recordings and oversized raw rows, kept beside (never on) Kafka.

Contract of :meth:`MediaStore.put_media` (recordings): the stream is copied under
``<tenant>/<yyyy>/<mm>/<dd>/<file_id>/<name>`` (``when`` gives the date, in UTC) with bounded
memory while its SHA-256 is computed; the object only becomes visible under its key once it is
complete; the returned :class:`StoredMedia` names it (``uri``, the ``recording_ref`` base) with
its checksum and size. A name whose extension is not a supported recording format raises
:class:`MediaRejected` ``unsupported_media`` before anything is copied; a stream longer than the
store's ``max_bytes`` raises ``too_large`` and leaves nothing behind. Re-putting the same
``file_id`` replaces the object (a retry after a crash redoes the copy). The first
:data:`~streams.ingest.mediainfo.HEAD_BYTES` of the stream are kept while it is copied and give
``duration_seconds`` (:func:`~streams.ingest.mediainfo.probe_duration`). Store outages raise
:class:`~streams.errors.MediaStoreError` (``retriable`` when waiting may help): the caller
retries the whole copy.

Contract of :meth:`LocalMediaStore.put` streams a binary file object into the store under a
relative key with bounded memory while hashing it, atomically (a partial copy is never visible
under the key), and returns the key and the SHA-256. Keys are built by callers from tenant,
connector and file ids, never from file content alone; they are normalised and may not leave
the store's root. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from connectors import paths
from streams.ingest.mediainfo import HEAD_BYTES, probe_duration

#: Recording formats accepted (seed 003: wav, mp3, mp4, m4a, mpg, wma, webm, aiff, flac, ogg,
#: gsm, webex arf, au; plus the spellings mpeg and aif and the opus and amr files that
#: :mod:`streams.voice.decode` decodes too).
MEDIA_SUFFIXES = frozenset(
    [
        ".wav",
        ".mp3",
        ".mp4",
        ".m4a",
        ".mpg",
        ".mpeg",
        ".wma",
        ".webm",
        ".aiff",
        ".aif",
        ".flac",
        ".ogg",
        ".gsm",
        ".arf",
        ".au",
        ".opus",
        ".amr",
    ]
)
#: The largest recording accepted by default (seed 003: 2 GB).
DEFAULT_MAX_MEDIA_BYTES = 2 * 1024**3
#: The largest limit that can be configured (S3's largest single copy, 5 GiB).
MAX_MEDIA_BYTES = 5 * 1024**3
#: Bytes asked of the source stream per read.
READ_BYTES = 1024 * 1024


class MediaRejected(Exception):
    """A recording the store refuses for good: ``reason`` is ``unsupported_media`` or
    ``too_large`` (a permanent, input-caused failure: dead-letter it, never retry)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """One recording as the media store holds it."""

    key: str
    """Store-relative key: ``<tenant>/<yyyy>/<mm>/<dd>/<file_id>/<name>``."""
    uri: str
    """Where it is: ``file:///...`` or ``s3://bucket/key``."""
    sha256: str
    size: int
    duration_seconds: float | None = None
    """From the media header where the format allows (WAV, FLAC); else None."""

    @property
    def ref(self) -> str:
        """The conversation's ``recording_ref``: the object and its checksum."""
        return f"{self.uri}#sha256={self.sha256}"


class MediaStore(Protocol):
    """Where recordings are kept (local folder or S3). Blocking: call from a worker thread."""

    def start(self) -> None:
        """Clean up what a killed process left (called once at start); never raises."""
        ...

    def put_media(
        self, tenant: str, file_id: str, name: str, stream: IO[bytes], *, when: dt.datetime
    ) -> StoredMedia: ...

    def put(self, key: str, stream: IO[bytes]) -> tuple[str, str]: ...

    def put_bytes(self, key: str, data: bytes) -> str: ...

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """Return the object under ``key`` (a dead letter's raw input, to replay it); raise
        :class:`MediaRejected` ``too_large`` past ``max_bytes``."""
        ...

    def open_read(self, key: str) -> IO[bytes]:
        """Open the object under ``key`` for streaming (the caller closes it); FileNotFoundError
        when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object under ``key`` (nothing there: nothing to do)."""
        ...


def media_key(tenant: str, file_id: str, name: str, when: dt.datetime) -> str:
    """Return ``<tenant>/<yyyy>/<mm>/<dd>/<file_id>/<name>`` (date in UTC, name's last part)."""
    day = when.astimezone(dt.UTC)
    base = PurePosixPath(name).name
    return paths.normalize(f"{tenant}/{day:%Y/%m/%d}/{file_id}/{base}")


def check_media_name(name: str) -> None:
    """Raise :class:`MediaRejected` ``unsupported_media`` unless ``name`` is a recording format."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in MEDIA_SUFFIXES:
        raise MediaRejected(
            "unsupported_media",
            f"{suffix or 'no extension'} is not a supported recording format "
            f"({', '.join(sorted(s[1:] for s in MEDIA_SUFFIXES))})",
        )


class MediaCopy:
    """What every store does to a recording while copying it: count, enforce the size limit,
    hash, and keep the head for :func:`~streams.ingest.mediainfo.probe_duration`."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()

    def read(self, stream: IO[bytes], n: int) -> bytes:
        """Read up to ``n`` bytes of ``stream`` (b"" at the end), accounted for; raise
        :class:`MediaRejected` ``too_large`` past the limit."""
        chunk = stream.read(n)
        if not chunk:
            return b""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise MediaRejected(
                "too_large", f"{self.name}: larger than the media limit of {self.max_bytes} bytes"
            )
        self.digest.update(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        return chunk

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of what was read so far."""
        return self.digest.hexdigest()

    def stored(self, key: str, uri: str) -> StoredMedia:
        """Describe the finished copy."""
        duration = probe_duration(self.name, bytes(self.head), self.size)
        return StoredMedia(key, uri, self.sha256, self.size, duration)


class LocalMediaStore:
    """A media store in a local directory (the embedded default)."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_MEDIA_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def start(self) -> None:
        """Nothing to do: a killed copy leaves only a hidden ``.<name>.part`` file, which the
        redone copy of the same key replaces."""

    def put_media(
        self, tenant: str, file_id: str, name: str, stream: IO[bytes], *, when: dt.datetime
    ) -> StoredMedia:
        """Copy a recording (see the module doc)."""
        check_media_name(name)
        key = media_key(tenant, file_id, name, when)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = MediaCopy(name, self.max_bytes)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with tmp.open("wb") as out:
                while chunk := copy.read(stream, READ_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())  # the outcome is recorded next: the copy must be durable
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return copy.stored(key, target.absolute().as_uri())

    def put(self, key: str, stream: IO[bytes]) -> tuple[str, str]:
        """Copy ``stream`` to ``key``; return ``(key, sha256 hex)``."""
        key = paths.normalize(key)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        tmp = target.with_name(f".{target.name}.part")
        with tmp.open("wb") as out:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
        return key, digest.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; return the key."""
        key = paths.normalize(key)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return key

    def open_read(self, key: str) -> IO[bytes]:
        """Open the object under ``key`` for streaming (the caller closes it)."""
        return (self.root / paths.normalize(key)).open("rb")

    def delete(self, key: str) -> None:
        """Delete the object under ``key`` and the folders it leaves empty (up to the root)."""
        target = self.root / paths.normalize(key)
        target.unlink(missing_ok=True)
        folder = target.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): stop
                break
            folder = folder.parent

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """Return the object under ``key``, at most ``max_bytes`` long."""
        with (self.root / paths.normalize(key)).open("rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise MediaRejected("too_large", f"{key} is larger than {max_bytes} bytes")
        return data
