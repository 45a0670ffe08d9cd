"""Conversation rows -> records, in this process or in a worker process (the second core).

:func:`encode_rows` is the one step from parsed rows to what a chunk publishes: a Conversation
record per valid row (tenant, source system and source set, the connector's recording fetch
marked, redacted and strictly encoded by :func:`~streams.ingest.records.conversation_record`),
a :class:`DeadRow` per rejected row (the caller builds its dead letter), and :data:`INCOMPLETE`
for a truncated last row of a file that may still be being written.

:class:`RowWorker` runs parsing, validation and :func:`encode_rows` of a whole CSV/TSV file in a
separate Python process, so a large file uses a core of its own instead of the service's event
loop's. Contract:

- one worker process, started by :meth:`RowWorker.warm` or on first use (``python -m
  streams.ingest.rowworker``, two pipes) and reused for every file; one file at a time
  (:attr:`RowWorker.busy`);
- :meth:`RowWorker.begin` sends a :class:`Job`; :meth:`RowWorker.feed` (blocking, in the
  connector's thread) streams the file's bytes and then an end mark, or an abort mark when
  reading fails (the worker then stops without reporting the rows it could not finish);
  :meth:`RowWorker.receive` (blocking) returns, in file order, ``("chunk", items, last_row,
  lines_read, header_raw)`` per chunk of ``chunk_rows`` rows or ``chunk_bytes`` raw bytes (rows
  already published, ``row <= rows_done``, left out), then one of ``("end", lines_read,
  header_raw)``, ``("rejected", reason, message, excerpt)`` (:class:`FileRejected`),
  ``("aborted",)``, ``("error", text)`` or ``("os_error", text)`` (the worker's disk or I/O
  failed, e.g. no space for a spool: the caller raises :class:`OSError`, retried as transient);
- a rejected row whose raw text was spooled to a temporary file (a line too long to hold)
  carries the spool's path (:attr:`DeadRow.spool_path`), in the worker's own spool folder: the
  caller opens and deletes it;
- anything unexpected (the caller gave up on a file, the process died): :meth:`RowWorker.stop`
  kills the process and removes its spool folder, with the spools of chunks never settled;
  the next file starts a new one. When the service process itself dies (SIGKILL), the worker
  sees its pipes close, removes its spool folder and exits.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO, Final

from streams.codec import AvroCodec
from streams.fetch.request import request_fetch
from streams.fetch.settings import RecordingFetchSettings
from streams.gctune import tune_for_throughput
from streams.ingest.parse import (
    FileRejected,
    ParsedRow,
    ParseSettings,
    ParseStats,
    RowInvalid,
    parse,
)
from streams.ingest.records import conversation_record
from streams.kafka import Record
from streams.redact import RedactionSettings, Redactor, Redactors
from streams.topics import Topics

INCOMPLETE: Final = "incomplete"
"""Item of a truncated last row in a file young enough to be still written (not a dead letter)."""

FEED_BLOCK = 256 * 1024
_DATA, _END, _ABORT = b"D", b"E", b"A"


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A rejected row: the caller dead-letters ``row`` with this reason."""

    row: ParsedRow
    reason: str
    message: str
    column: str | None
    spool_path: str | None = None


Item = Record | DeadRow | str


def encode_rows(
    rows: list[ParsedRow],
    arrival: dict[str, Any],
    ingest: ParseSettings,
    young: bool,
    fetch: RecordingFetchSettings | None,
    codec: AvroCodec,
    topics: Topics,
    max_record_bytes: int,
    redactors: Redactors,
) -> list[Item]:
    """Turn parsed rows into items, in row order (see the module doc)."""
    items: list[Item] = []
    tenant = arrival["tenant"]
    source_system = ingest.source_system
    file_id, connector, path = arrival["file_id"], arrival["connector"], arrival["path"]
    announced = arrival["announced_at"]
    for row in rows:
        if row.conversation is None:
            assert row.error is not None  # noqa: S101 - a row is valid or has an error
            if row.truncated and young:
                items.append(INCOMPLETE)  # the writer may still be at it: not a dead letter
                continue
            err = row.error
            items.append(DeadRow(row, err.reason, err.message, err.column))
            continue
        conv = {
            **row.conversation,
            "tenant": tenant,
            "source_system": source_system,
            "source": {
                "file_id": file_id,
                "connector": connector,
                "path": path,
                "row": row.row,
                "announced_at": announced,
            },
        }
        if fetch is not None:
            conv = request_fetch(tenant, conv, fetch)
        try:
            items.append(conversation_record(codec, topics, conv, max_record_bytes, redactors))
        except RowInvalid as exc:
            items.append(DeadRow(row, exc.error.reason, exc.error.message, None))
    return items


@dataclass(frozen=True)
class Job:
    """One file for the worker: what :func:`encode_rows` needs, and where to resume."""

    arrival: dict[str, Any]
    ingest: ParseSettings
    young: bool
    fetch: RecordingFetchSettings | None
    topics: Topics
    max_record_bytes: int
    redaction: RedactionSettings
    redaction_key: bytes
    rows_done: int
    chunk_rows: int
    chunk_bytes: int


class RowWorker:
    """The worker process (see the module doc); its methods block: call them in threads."""

    def __init__(self, schemas_dir: str) -> None:
        self.schemas_dir = schemas_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs: Connection | None = None
        self._results: Connection | None = None
        self._lock = threading.Lock()
        self._spool_dir: str | None = None
        self.busy = False
        """A file is being processed (the caller then reads another file in its own process)."""

    def _start(self) -> None:
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        self._spool_dir = tempfile.mkdtemp(prefix="callstream-rowworker-")
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.ingest.rowworker",
                    str(jobs_r),
                    str(results_w),
                    self.schemas_dir,
                    self._spool_dir,
                ],
                pass_fds=(jobs_r, results_w),
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (jobs_r, jobs_w, results_r, results_w):
                os.close(fd)
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None
            raise
        os.close(jobs_r)
        os.close(results_w)
        self._jobs = Connection(jobs_w, readable=False)
        self._results = Connection(results_r, writable=False)

    def warm(self) -> None:
        """Start the worker process unless it runs (the service does this as it starts, so
        the first large file does not wait for the process to import its modules)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.stop()
                self._start()

    def begin(self, job: Job) -> None:
        """Start the worker if needed and send it ``job``."""
        self.warm()
        with self._lock:
            assert self._jobs is not None  # noqa: S101 - started just above
            self._jobs.send_bytes(pickle.dumps(job, pickle.HIGHEST_PROTOCOL))

    def feed(self, stream: BinaryIO) -> None:
        """Send the file's bytes, then the end mark (the abort mark when reading fails)."""
        jobs = self._jobs
        assert jobs is not None  # noqa: S101 - begin() came first
        try:
            while data := stream.read(FEED_BLOCK):
                jobs.send_bytes(_DATA + data)
        except BaseException:
            jobs.send_bytes(_ABORT)
            raise
        jobs.send_bytes(_END)

    def receive(self) -> tuple[Any, ...]:
        """Return the worker's next message (see the module doc)."""
        results = self._results
        assert results is not None  # noqa: S101 - begin() came first
        try:
            message: tuple[Any, ...] = pickle.loads(results.recv_bytes())  # noqa: S301 - our child
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the row worker process ended: {exc}") from exc
        return message

    def stop(self) -> None:
        """Kill the worker process (a new one starts with the next file)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()  # first: a thread blocked sending to it gets a broken pipe
            proc.wait(10)
        for conn in (self._jobs, self._results):
            if conn is not None:
                conn.close()
        self._jobs = self._results = None
        spool_dir, self._spool_dir = self._spool_dir, None
        if spool_dir is not None:
            shutil.rmtree(spool_dir, ignore_errors=True)


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


# -- the worker process ------------------------------------------------------------------------


class _Aborted(Exception):
    """The service could not read the rest of the file."""


class _Feed(io.RawIOBase):
    """The file's bytes as the service sends them (data blocks, then an end or abort mark)."""

    def __init__(self, jobs: Connection) -> None:
        self._jobs = jobs
        self._block = b""
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._block:
            if self.ended:
                return 0
            message = self._jobs.recv_bytes()
            if message[:1] == _DATA:
                self._block = message[1:]
            elif message == _END:
                self.ended = True
            else:
                self.ended = True
                raise _Aborted
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._block))
        view[:n] = self._block[:n]
        self._block = self._block[n:]
        return n

    def drain(self) -> None:
        """Read up to the end or abort mark, so the next job starts clean."""
        while not self.ended:
            message = self._jobs.recv_bytes()
            if message[:1] != _DATA:
                self.ended = True


def _chunks(rows: Iterator[ParsedRow], job: Job) -> Iterator[list[ParsedRow]]:
    chunk: list[ParsedRow] = []
    size = 0
    for row in rows:
        chunk.append(row)
        size += len(row.raw)
        if len(chunk) >= job.chunk_rows or size >= job.chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _portable(item: Item, spool_dir: str) -> Item:
    """A dead row's spool (an open temporary file) as a named file the service opens."""
    if not isinstance(item, DeadRow) or item.row.raw_spool is None:
        return item
    spool = item.row.raw_spool
    with tempfile.NamedTemporaryFile(prefix="row-", dir=spool_dir, delete=False) as named:
        shutil.copyfileobj(spool, named)
    spool.close()
    row = dataclasses.replace(item.row, raw_spool=None)
    return dataclasses.replace(item, row=row, spool_path=named.name)


def _run(job: Job, jobs: Connection, results: Connection, codec: AvroCodec, spool_dir: str) -> None:
    feed = _Feed(jobs)
    stats = ParseStats()
    tenant = job.arrival["tenant"]
    redactors = Redactors({tenant: job.redaction}, lambda _purpose: job.redaction_key)

    def send(*message: Any) -> None:
        results.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    try:
        rows = parse(io.BufferedReader(feed, FEED_BLOCK), job.arrival["path"], job.ingest, stats)
        for chunk in _chunks(rows, job):
            fresh = [r for r in chunk if r.row > job.rows_done]
            items = encode_rows(
                fresh,
                job.arrival,
                job.ingest,
                job.young,
                job.fetch,
                codec,
                job.topics,
                job.max_record_bytes,
                redactors,
            )
            last = fresh[-1].row if fresh else None
            send(
                "chunk",
                [_portable(i, spool_dir) for i in items],
                last,
                stats.lines_read,
                stats.header_raw,
            )
        send("end", stats.lines_read, stats.header_raw)
    except _Aborted:
        send("aborted")
    except FileRejected as exc:
        send("rejected", exc.reason, str(exc), exc.excerpt)
    except OSError:
        send("os_error", traceback.format_exc(limit=20))
    except Exception:  # noqa: BLE001 - reported to the service, which fails the file
        send("error", traceback.format_exc(limit=20))
    finally:
        feed.drain()


def _serve(jobs_fd: int, results_fd: int, schemas_dir: str, spool_dir: str) -> None:
    # Ctrl-C reaches the whole process group: the service stops this worker (closing the
    # pipe) as part of its own orderly stop, so the signal itself is ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jobs = Connection(jobs_fd, writable=False)
    results = Connection(results_fd, readable=False)
    codec = AvroCodec(Path(schemas_dir))
    tune_for_throughput()  # a row's dicts are freed by reference counting (streams/gctune.py)
    try:
        while True:
            try:
                job: Job = pickle.loads(jobs.recv_bytes())  # noqa: S301 - from the service
            except EOFError:
                return  # the service closed the pipe
            _run(job, jobs, results, codec, spool_dir)
    finally:
        # The service removes the folder when it stops this worker; when the service itself
        # was killed (SIGKILL), its end of the pipes closed and this is the only clean-up.
        shutil.rmtree(spool_dir, ignore_errors=True)


def redactor_parts(redactor: Redactor) -> tuple[RedactionSettings, bytes]:
    """The settings and hash key of a tenant's redactor, to rebuild it in the worker."""
    return redactor.settings, redactor._key


if __name__ == "__main__":
    # The module's own name, not __main__: the items it sends unpickle in the service.
    from streams.ingest import rowworker

    rowworker._serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
