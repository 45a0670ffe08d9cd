"""A file read in the row worker process publishes exactly what reading it in-process does.

Every file goes through :class:`FileProcessor` twice, once in this process and once in the row
worker (``processors.row_worker_min_bytes``): the conversation records must be byte for byte the
same, the dead letters the same (reason, row, line, column, raw text, excerpt, stage), and so
the outcome, counts and lines read.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.base import RemoteFile
from connectors.errors import FileVanished
from connectors.local import LocalConfig
from connectors.poller import PollConfig
from streams.cases.store import CaseStore
from streams.codec import AvroCodec
from streams.ingest.files import FileProcessor, FileResult
from streams.ingest.parse import ParseSettings
from streams.ingest.rowworker import Job, RowWorker
from streams.kafka import Record
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.redact import RedactionSettings
from streams.runner import file_id
from streams.settings import ConnectorSettings, Settings, TenantSettings
from streams.topics import Topics

CODEC = AvroCodec()
TOPICS = Topics("t")
HEADER = "external_interaction_id,channel,started_at,note\n"
GOOD = "".join(f"CALL-{i},voice,2026-11-20T09:00:00+02:00,n{i}\n" for i in range(2500))
HOSTILE = (
    HEADER
    + GOOD
    + "CALL-A,fax,2026-11-20T09:00:00Z,x\n"  # invalid_value
    + "CALL-B,voice,2026-11-20T09:00:00Z,a\x01b\n"  # control_character
    + "CALL-C,voice,yesterday,x\n"  # bad_timestamp
    + "CALL-D,voice\n"  # wrong_column_count
    + 'CALL-E,voice,2026-11-20T09:00:00Z,"open\nCALL-F,voice,2026-11-20T09:00:00Z,x\n'
    + "CALL-G,voice,2026-11-20T09:00:00Z,"
    + "y" * 5000
    + "\n"  # row_too_large (spooled)
    + ",voice,2026-11-20T09:00:00Z,x\n"  # missing_id
    + "\n"
    + "CALL-H,voice,2026-11-20T09:00:00Z,last\n"
    + "CALL-I,voice,2026-11-20T09:00"  # truncated last row
)


class Recorder:
    """Acknowledges every batch and keeps its records."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def send_batch(self, records: list[Record]) -> None:
        self.records.extend(records)


def _settings(root: Path, worker: bool) -> Settings:
    drop = ConnectorSettings(
        name="drop",
        store=LocalConfig(root=root),
        poll=PollConfig(min_age_seconds=0, incomplete_grace_seconds=3600),
        ingest=ParseSettings(max_row_bytes=4096, max_field_bytes=2048, source_system="s"),
    )
    return Settings(
        data_dir=root.parent / "data",
        demo=False,
        processors={"chunk_rows": 700, "row_worker_min_bytes": 1 if worker else 0},
        tenants=[TenantSettings(id="acme", connectors=[drop])],
    )


def _arrival(root: Path, path: str, announced: dt.datetime, age: float) -> dict[str, Any]:
    st = (root / path).stat()
    version = RemoteFile(path, st.st_size, st.st_mtime).version_id
    return {
        "file_id": file_id("acme", "drop", path, version),
        "tenant": "acme",
        "connector": "drop",
        "path": path,
        "version_id": version,
        "mtime": announced - dt.timedelta(seconds=age),
        "size": st.st_size,
        "announced_at": announced,
    }


async def _run(
    tmp_path: Path, name: str, data: bytes, worker: bool, age: float
) -> tuple[FileResult, list[Record]]:
    root = tmp_path / ("worker" if worker else "inline") / "in"
    root.mkdir(parents=True)
    (root / name).write_bytes(data)
    os.utime(root / name, (1_700_000_000, 1_700_000_000))  # the same file version both times
    producer = Recorder()
    url = f"sqlite+aiosqlite:///{root.parent / 'cases.db'}"
    announced = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    async with CaseStore(url, CODEC, TOPICS, lambda _t: ()) as store:
        processor = FileProcessor(
            _settings(root, worker),
            CODEC,
            TOPICS,
            producer,  # type: ignore[arg-type]
            Metrics(),
            store,
            LocalMediaStore(root.parent / "media"),  # type: ignore[arg-type]
        )
        try:
            result = await processor.process(_arrival(root, name, announced, age))
        finally:
            processor.close()
    return result, producer.records


def _comparable(records: list[Record]) -> list[Any]:
    out: list[Any] = []
    for topic, key, value in records:
        if topic == TOPICS.dead_letter:
            dead = CODEC.decode("callstream.DeadLetter", value)
            fields = ("reason", "row", "line", "column", "excerpt", "stage", "raw", "raw_size")
            out.append((topic, key, tuple(dead[f] for f in fields), dead["raw_ref"] is None))
        elif topic == TOPICS.file_outcomes:
            outcome = CODEC.decode("callstream.FileOutcome", value)
            del outcome["decided_at"]
            out.append((topic, key, outcome))
        else:
            out.append((topic, key, value))
    return out


@pytest.mark.parametrize(
    ("name", "data", "age"),
    [
        ("hostile.csv", HOSTILE.encode("utf-8", "surrogateescape") + b"\xff,", 0),
        ("hostile-old.csv", HOSTILE.encode(), 7200),
        ("utf16.csv", codecs.BOM_UTF16_LE + (HEADER + GOOD).encode("utf-16-le"), 0),
        ("bom.tsv", codecs.BOM_UTF8 + (HEADER + GOOD).replace(",", "\t").encode(), 0),
        ("no-id.csv", b"channel,started_at\nvoice,2026-11-20T09:00:00Z\n", 0),
        ("empty.csv", b"", 0),
        ("binary.csv", os.urandom(3000), 0),
    ],
)
async def test_the_row_worker_publishes_what_in_process_reading_does(
    tmp_path: Path, name: str, data: bytes, age: float
) -> None:
    inline, inline_records = await _run(tmp_path, name, data, worker=False, age=age)
    worker, worker_records = await _run(tmp_path, name, data, worker=True, age=age)
    assert _comparable(worker_records) == _comparable(inline_records)
    assert (worker.outcome, worker.reason, worker.accepted, worker.rejected) == (
        inline.outcome,
        inline.reason,
        inline.accepted,
        inline.rejected,
    )
    assert (worker.lines_read, worker.incomplete, worker.rows_done) == (
        inline.lines_read,
        inline.incomplete,
        inline.rows_done,
    )
    if name.startswith("hostile"):
        assert inline.accepted == 2501 and len(inline.rejected) >= 6


class _Breaks(io.RawIOBase):
    """A stream that fails after ``limit`` bytes, as a store does when the file vanishes."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = io.BytesIO(data)
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._data.tell() >= self._limit:
            raise FileVanished("the file went away")
        data = self._data.read(min(len(buffer), self._limit - self._data.tell()))
        buffer[: len(data)] = data
        return len(data)


def _job() -> Job:
    """A worker job for ``a.csv`` of acme's connector (700-row chunks)."""
    root = Path("/nonexistent")
    settings = _settings(root, worker=True)
    announced = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    arrival = {
        "file_id": "f",
        "tenant": "acme",
        "connector": "drop",
        "path": "a.csv",
        "announced_at": announced,
    }
    return Job(
        arrival=arrival,
        ingest=settings.tenants[0].connectors[0].ingest,
        young=False,
        fetch=None,
        topics=TOPICS,
        max_record_bytes=1_000_000,
        redaction=RedactionSettings(),
        redaction_key=b"",
        rows_done=0,
        chunk_rows=700,
        chunk_bytes=8_000_000,
    )


def test_a_read_that_fails_aborts_the_file_and_the_worker_takes_the_next() -> None:
    job = _job()
    data = (HEADER + GOOD).encode()
    worker = RowWorker(str(CODEC.schemas_dir))
    try:
        worker.begin(job)
        with pytest.raises(FileVanished):
            worker.feed(_Breaks(data, 60_000))  # type: ignore[arg-type]
        messages = []
        while (message := worker.receive())[0] == "chunk":
            messages.append(message)
        assert message == ("aborted",)
        # only whole rows read before the failure were sent, in order
        rows = [item for m in messages for item in m[1]]
        assert 0 < len(rows) < 2500
        assert [m[2] for m in messages] == sorted(m[2] for m in messages)
        worker.begin(job)  # the same process takes the next file
        worker.feed(io.BytesIO(data))
        chunks = []
        while (message := worker.receive())[0] == "chunk":
            chunks.append(message)
        assert message[0] == "end"
        assert sum(len(m[1]) for m in chunks) == 2500
        assert all(isinstance(i, tuple) for m in chunks for i in m[1])
    finally:
        worker.stop()


async def test_a_worker_that_cannot_start_leaves_the_file_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (HEADER + GOOD).encode()
    inline, inline_records = await _run(tmp_path, "a.csv", data, worker=False, age=0)
    monkeypatch.setattr("streams.ingest.rowworker.sys.executable", str(tmp_path / "no-python"))
    worker, worker_records = await _run(tmp_path, "a.csv", data, worker=True, age=0)
    assert _comparable(worker_records) == _comparable(inline_records)
    assert (
        (worker.outcome, worker.accepted)
        == (inline.outcome, inline.accepted)
        == (
            "processed",
            2500,
        )
    )


def test_stopping_the_worker_mid_file_removes_the_spools_it_wrote() -> None:
    """A dead row's spool the service never settled (it gave up on the file, or it stops) is
    removed with the worker's spool folder: nothing is left on disk."""
    worker = RowWorker(str(CODEC.schemas_dir))
    try:
        worker.begin(_job())
        worker.feed(io.BytesIO(HOSTILE.encode()))
        spooled = []
        while (message := worker.receive())[0] == "chunk":
            spooled += [i.spool_path for i in message[1] if getattr(i, "spool_path", None)]
        assert message[0] == "end"
        assert len(spooled) == 1 and os.path.exists(spooled[0])
        folder = os.path.dirname(spooled[0])
        assert os.path.basename(folder).startswith("callstream-rowworker-")
    finally:
        worker.stop()
    assert not os.path.exists(spooled[0]) and not os.path.exists(folder)


def test_a_killed_service_leaves_no_worker_and_no_spool_folder(tmp_path: Path) -> None:
    """SIGKILL of the service process: its worker sees the pipes close, removes its spool
    folder (with any spool in it) and exits."""
    service = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from streams.ingest.rowworker import RowWorker;"
            " w = RowWorker(sys.argv[1]); w.warm();"
            " print(w._proc.pid, w._spool_dir, flush=True); time.sleep(60)",
            str(CODEC.schemas_dir),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert service.stdout is not None
        pid, folder = service.stdout.readline().decode().split()
        (Path(folder) / "row-unsettled").write_bytes(b"x" * 100)  # a spool never settled
    finally:
        service.kill()
        service.communicate()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() or Path(folder).exists():
        assert time.monotonic() < deadline, "the worker outlived its service or left its folder"
        time.sleep(0.05)


def test_a_disk_failure_in_the_worker_is_reported_as_one() -> None:
    """The worker cannot write a spool (its folder is gone: as with a full disk, an OSError):
    it says ``os_error``, which the service raises as OSError, retried as transient."""
    worker = RowWorker(str(CODEC.schemas_dir))
    try:
        worker.begin(_job())
        assert worker._spool_dir is not None
        shutil.rmtree(worker._spool_dir)
        worker.feed(io.BytesIO(HOSTILE.encode()))
        while (message := worker.receive())[0] == "chunk":
            pass
        assert message[0] == "os_error" and "FileNotFoundError" in message[1]
    finally:
        worker.stop()
