"""Retention of processed originals (seeds 002/003): kept ``retention.days``, then purged or
gzipped into an archive folder.

Contract of :func:`apply_retention`:

- It walks only the connector's ``poll.processed_dir`` (and ``poll.invalid_dir`` when
  ``retention.include_invalid``), never the inbox nor the archive, and looks at files whose mtime
  is older than ``retention.days`` before ``now``.
- ``purge`` deletes them. ``archive`` streams each through gzip into
  ``<folder>/<archive_dir>/<path inside folder>.gz`` (e.g. ``processed/archive/exports/a.csv.gz``)
  and deletes the original only once the archive is completely written (the store's ``write`` is
  atomic: a half-written archive is never visible and never replaces a good one) and the
  original is still the version that was archived. The archive sits inside the processed (or
  invalid) folder on purpose: the poller never descends there, so an archive is never announced
  as a new file. An archive name already taken (an older version of the same path) is kept; the
  new one gets the original's mtime in its name (``a.csv.20261101T020000Z.gz``).
- ``keep`` does nothing. One file's failure is counted and named in ``errors``; the others go
  on. A store that cannot be reached fails the whole call (the caller's run is "handler failed").
- The store is built by the caller and not connected; this function connects and closes it.
  Every store call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from connectors.base import FileStore, Prune, RemoteFile
from connectors.errors import ConnectorError, TargetExists
from streams.settings import ConnectorSettings, Settings

log = logging.getLogger(__name__)

MAX_ERRORS = 50
"""Most per-file errors a summary names (the count is always complete)."""


@dataclass
class RetentionSummary:
    """What one retention pass over one connector did."""

    examined: int = 0
    purged: int = 0
    archived: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class GzipStream(io.RawIOBase):
    """A readable stream of the gzip compression of ``src``, produced as it is read."""

    CHUNK = 1024 * 1024

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer and not self._done:
            chunk = self._src.read(self.CHUNK)
            if chunk:
                self._buffer += self._zip.compress(chunk)
            else:
                self._buffer += self._zip.flush()
                self._done = True
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        del self._buffer[:n]
        return n


def gzipped(src: BinaryIO) -> BinaryIO:
    """A buffered reader of the gzip of ``src`` (what :meth:`FileStore.write` reads)."""
    return io.BufferedReader(GzipStream(src), buffer_size=GzipStream.CHUNK)


def _folders(connector: ConnectorSettings) -> list[str]:
    poll, retention = connector.poll, connector.retention
    folders = [poll.processed_dir.strip("/")]
    if retention.include_invalid:
        folders.append(poll.invalid_dir.strip("/"))
    return folders


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _prune_for(folders: list[str], archive_dir: str) -> Prune:
    archives = [f"{f}/{archive_dir}" for f in folders]

    def prune(folder: str) -> bool:
        if any(_within(folder, a) for a in archives):
            return True
        inside = any(_within(folder, f) for f in folders)
        on_the_way = any(f.startswith(folder + "/") for f in folders)
        return not (inside or on_the_way)

    return prune


def _archive_name(path: str, folders: list[str], archive_dir: str) -> str:
    folder = next(f for f in folders if _within(path, f))
    return f"{folder}/{archive_dir}/{path[len(folder) + 1 :]}.gz"


def _stamped(name: str, mtime: float) -> str:
    stamp = dt.datetime.fromtimestamp(mtime, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{name[: -len('.gz')]}.{stamp}.gz"


def _archive(store: FileStore, file: RemoteFile, target: str) -> None:
    """Write the gzip of ``file`` at ``target`` (or its stamped name), then delete ``file``."""
    try:
        with store.open(file.path) as src:
            store.write(target, gzipped(src), replace=False)
    except TargetExists:
        with store.open(file.path) as src:
            store.write(_stamped(target, file.mtime), gzipped(src), replace=True)
    _delete_if_unchanged(store, file)


def _delete_if_unchanged(store: FileStore, file: RemoteFile) -> None:
    current = store.stat(file.path)
    if current is None:
        return
    if (current.size, current.mtime, current.etag) != (file.size, file.mtime, file.etag):
        raise ConnectorError(f"{file.path!r} changed while it was archived: kept")
    store.delete(file.path)


def _old_files(
    store: FileStore, folders: list[str], archive_dir: str, cutoff: float
) -> tuple[int, list[RemoteFile]]:
    """Return (files examined, those older than ``cutoff``) in the retention folders."""
    examined, old = 0, []
    for entry in store.iter_entries(_prune_for(folders, archive_dir)):
        if not isinstance(entry, RemoteFile) or not any(_within(entry.path, f) for f in folders):
            continue
        if any(_within(entry.path, f"{f}/{archive_dir}") for f in folders):
            continue
        examined += 1
        if entry.mtime < cutoff:
            old.append(entry)
    return examined, old


async def apply_retention(
    settings: Settings,
    tenant: str,
    connector: ConnectorSettings,
    store: FileStore,
    now: dt.datetime,
) -> RetentionSummary:
    """Purge or archive ``connector``'s processed originals older than its retention (see the
    module doc); ``settings`` is the service's (unused today, kept for the runner's call)."""
    retention = connector.retention
    summary = RetentionSummary()
    if retention.action == "keep":
        return summary
    folders = _folders(connector)
    cutoff = (now - dt.timedelta(days=retention.days)).timestamp()
    await asyncio.to_thread(store.connect)
    try:
        summary.examined, old = await asyncio.to_thread(
            _old_files, store, folders, retention.archive_dir, cutoff
        )
        for file in old:
            try:
                if retention.action == "purge":
                    await asyncio.to_thread(store.delete, file.path)
                    summary.purged += 1
                else:
                    target = _archive_name(file.path, folders, retention.archive_dir)
                    await asyncio.to_thread(_archive, store, file, target)
                    summary.archived += 1
            except ConnectorError as exc:
                summary.failed += 1
                if len(summary.errors) < MAX_ERRORS:
                    summary.errors.append(f"{file.path}: {exc}")
                log.warning(
                    "retention of %s/%s: %s %r failed: %s",
                    tenant,
                    connector.name,
                    retention.action,
                    file.path,
                    exc,
                )
    finally:
        await asyncio.to_thread(store.close)
    log.info(
        "retention of %s/%s: %d examined, %d purged, %d archived, %d failed",
        tenant,
        connector.name,
        summary.examined,
        summary.purged,
        summary.archived,
        summary.failed,
    )
    return summary
