"""One conformance suite for every file store: local folder, SFTP and S3.

Each store is given the same tree, written through a small per-store *writer* (the file system
for local and SFTP, boto3 ``put_object`` for S3), and must list, stat, open, move and delete the
same way, and refuse the same unsafe things. What a store cannot hold is left out of its tree
and its assertions: S3 has no symlinks, FIFOs or settable mtimes (it has "folder" placeholder
keys instead, which must not be listed).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from servers.s3 import S3Server
from servers.sshd import SftpServer
from support import chown_tree, sftp_config

from connectors.base import FileStore, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    ConnectorError,
    FileVanished,
    NotARegularFile,
    TargetExists,
    UnsafePath,
)
from connectors.local import LocalConfig, LocalStore
from connectors.poller import CleanupAction, Outcome, PollConfig, Poller
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpStore

OLD = 1_700_000_000
UNSAFE = "bad\x01name.csv"


@dataclass
class DiskWriter:
    """Writes the tree into the folder a local or SFTP store serves."""

    root: Path
    chown: bool = False  # files made as root must belong to the SFTP user
    links: bool = True
    special_files: bool = True
    sets_mtime: bool = True

    def write(self, path: str, data: bytes, mtime: float | None = None) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mtime is not None:
            os.utime(target, (mtime, mtime))
        self._own()

    def mkdir(self, folder: str) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._own()

    def symlink(self, path: str, target: str) -> None:
        (self.root / path).symlink_to(self.root / target)
        self._own()

    def mkfifo(self, path: str) -> None:
        os.mkfifo(self.root / path)
        self._own()

    def read(self, path: str) -> bytes | None:
        target = self.root / path
        return target.read_bytes() if target.is_file() else None

    def _own(self) -> None:
        if self.chown:
            chown_tree(self.root, self.root)


@dataclass
class S3Writer:
    """Writes the tree as objects under the store's prefix, as an uploading client would."""

    client: Any
    bucket: str
    prefix: str
    links: bool = False
    special_files: bool = False
    sets_mtime: bool = False
    written: list[str] = field(default_factory=list)

    def write(self, path: str, data: bytes, mtime: float | None = None) -> None:
        del mtime  # S3 sets LastModified itself
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + path, Body=data)

    def mkdir(self, folder: str) -> None:
        """Create "folder" placeholder keys, as the S3 console's 'Create folder' does."""
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            key = self.prefix + "/".join(parts[:i]) + "/"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")

    def symlink(self, path: str, target: str) -> None:
        raise AssertionError("S3 has no symlinks")

    def mkfifo(self, path: str) -> None:
        raise AssertionError("S3 has no FIFOs")

    def read(self, path: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + path)
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data


Writer = DiskWriter | S3Writer


@pytest.fixture(params=["local", "sftp", "s3"])
def store_and_writer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FileStore, Writer]]:
    """A connected store and the writer that puts files where it looks."""
    writer: Writer
    if request.param == "local":
        root = tmp_path / "root"
        root.mkdir()
        store: FileStore = LocalStore(LocalConfig(root=root))
        writer = DiskWriter(root)
    elif request.param == "sftp":
        server: SftpServer = request.getfixturevalue("sftp_server")
        root = request.getfixturevalue("clean_upload")
        store = SftpStore(sftp_config(server, read_window_bytes=64 * 1024))
        writer = DiskWriter(root, chown=True)
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        config = S3Config(
            bucket=bucket,
            prefix="inbox",
            endpoint_url=s3.endpoint_url,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            addressing_style="path",
        )
        store = S3Store(config)
        writer = S3Writer(s3.client(), bucket, "inbox/")
    _make_tree(writer)
    store.connect()
    try:
        yield store, writer
    finally:
        store.close()


BIG = os.urandom(3 * 1024 * 1024 + 17)


def _make_tree(w: Writer) -> None:
    w.mkdir("calls/2026/11")
    w.write("a.csv", b"id\n1\n", mtime=OLD)
    w.write("calls/2026/11/b.csv", b"id\n2\n")
    w.write("big.bin", BIG)
    w.write(UNSAFE, b"id\n3\n")
    if w.links:
        w.symlink("link.csv", "a.csv")
        w.symlink("dirlink", "calls")
    if w.special_files:
        w.mkfifo("fifo.csv")


def test_lists_regular_files_recursively_and_skips_the_rest(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    entries = list(store.iter_entries())
    files = {e.path: e for e in entries if isinstance(e, RemoteFile)}
    skipped = {e.path: e.reason for e in entries if isinstance(e, SkippedEntry)}
    assert sorted(files) == ["a.csv", "big.bin", "calls/2026/11/b.csv"]
    assert files["a.csv"].size == 5
    if w.sets_mtime:
        assert files["a.csv"].mtime == OLD
    else:  # the store's own clock: the upload time, whole seconds
        assert abs(files["a.csv"].mtime - time.time()) < 300
        assert files["a.csv"].mtime == int(files["a.csv"].mtime)
    expected = {UNSAFE: SkipReason.UNSAFE_NAME}
    if w.links:
        expected |= {"link.csv": SkipReason.SYMLINK, "dirlink": SkipReason.SYMLINK}
    if w.special_files:
        expected["fifo.csv"] = SkipReason.SPECIAL_FILE
    assert skipped == expected


def test_listing_and_stat_report_the_same_version(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, _w = store_and_writer
    for entry in store.iter_entries():
        if isinstance(entry, RemoteFile):
            assert store.stat(entry.path) == entry


def test_prune_keeps_listing_out_of_folders(store_and_writer: tuple[FileStore, Writer]) -> None:
    store, _w = store_and_writer
    paths = [e.path for e in store.iter_entries(lambda folder: folder == "calls")]
    assert not [p for p in paths if p.startswith("calls/")]
    assert "a.csv" in paths and "big.bin" in paths


def test_open_streams_the_exact_bytes(store_and_writer: tuple[FileStore, Writer]) -> None:
    store, _w = store_and_writer
    digest = hashlib.sha256()
    with store.open("big.bin") as fh:
        while chunk := fh.read(100_000):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(BIG).hexdigest()


def test_stat_reports_the_current_version(store_and_writer: tuple[FileStore, Writer]) -> None:
    store, w = store_and_writer
    first = store.stat("calls/2026/11/b.csv")
    assert first is not None and first.size == 5
    w.write("calls/2026/11/b.csv", b"id\n2\n3\n", mtime=1_800_000_000)
    second = store.stat("calls/2026/11/b.csv")
    assert second is not None and second.version_id != first.version_id
    assert second.size == 7
    assert store.stat("nope.csv") is None


def test_refuses_unsafe_paths_and_non_regular_files(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    for bad in ("../x", "/etc/passwd", "calls/../../x", ""):
        with pytest.raises(UnsafePath):
            store.open(bad)
    specials = (["link.csv"] if w.links else []) + (["fifo.csv"] if w.special_files else [])
    for special in specials:
        with pytest.raises(NotARegularFile):
            store.open(special)
    with pytest.raises(FileVanished):
        store.open("missing.csv")


def test_move_creates_folders_replaces_target_and_delete_removes(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    store.move("a.csv", "processed/a.csv")
    assert w.read("processed/a.csv") == b"id\n1\n"
    assert w.read("a.csv") is None
    w.write("a.csv", b"id\n9\n")  # same name uploaded again, processed again
    store.move("a.csv", "processed/a.csv")
    assert w.read("processed/a.csv") == b"id\n9\n"
    store.delete("processed/a.csv")
    assert w.read("processed/a.csv") is None
    store.delete("processed/a.csv")  # already gone: no error
    with pytest.raises(FileVanished):
        store.move("a.csv", "processed/a.csv")


def test_move_without_replace_refuses_a_taken_target(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    w.write("processed/a.csv", b"newer\n")
    with pytest.raises(TargetExists):
        store.move("a.csv", "processed/a.csv", replace=False)
    assert w.read("a.csv") == b"id\n1\n" and w.read("processed/a.csv") == b"newer\n"
    store.move("a.csv", "elsewhere/a.csv", replace=False)
    assert w.read("elsewhere/a.csv") == b"id\n1\n" and w.read("a.csv") is None


class _Clock:
    def __init__(self) -> None:
        self.now = time.time() + 60  # every file of the tree is old enough

    def __call__(self) -> float:
        return self.now


def _announced_and_processed(poller: Poller, clock: _Clock, path: str) -> RemoteFile:
    """Poll until ``path`` is ready, announce it, record a ``processed`` verdict on it."""
    poller.poll()  # first sight
    ready = {c.file.path: c for c in poller.poll().ready}
    poller.mark_announced(ready.values())
    poller.note_outcome(path, ready[path].file.version_id, Outcome.PROCESSED, clock.now)
    return ready[path].file


def _cycle(poller: Poller, clock: _Clock, seconds: float) -> list[CleanupAction]:
    """Let time pass, then run a cycle as the runner does: poll, then the due clean-ups."""
    clock.now += seconds
    poller.poll()
    steps = [poller.cleanup_step(p) for p in poller.due_cleanups()]
    return [s.action for s in steps if s is not None]


def test_a_moved_file_settles_and_is_not_announced_again(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    """Clean-up watches a moved file for the settle window: a store whose move changed the
    file's mtime (S3 copies) would move it back and announce it again."""
    store, w = store_and_writer
    clock = _Clock()
    config = PollConfig(min_age_seconds=1, cleanup="move", cleanup_settle_seconds=10)
    poller = Poller(store, config, clock=clock)
    _announced_and_processed(poller, clock, "a.csv")
    if not w.sets_mtime:
        time.sleep(1.1)  # the copy's LastModified is then a later second than the upload's
    assert _cycle(poller, clock, 2) == [CleanupAction.MOVED_PROCESSED]
    assert w.read("processed/a.csv") == b"id\n1\n" and w.read("a.csv") is None
    actions = [a for _ in range(4) for a in _cycle(poller, clock, 3)]
    assert actions == [CleanupAction.SETTLED]
    assert w.read("processed/a.csv") == b"id\n1\n"
    assert not poller.poll().ready


def test_a_moved_file_that_changes_goes_back_and_is_a_new_version(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    clock = _Clock()
    config = PollConfig(min_age_seconds=1, cleanup="move", cleanup_settle_seconds=30)
    poller = Poller(store, config, clock=clock)
    first = _announced_and_processed(poller, clock, "a.csv")
    if not w.sets_mtime:
        time.sleep(1.1)  # as above: every later upload and copy lands in a later second
    assert _cycle(poller, clock, 2) == [CleanupAction.MOVED_PROCESSED]
    w.write("processed/a.csv", b"id\n1\n2\n", mtime=OLD + 60)  # a writer resumed into it
    if not w.sets_mtime:
        time.sleep(1.1)
    assert _cycle(poller, clock, 2) == [CleanupAction.MOVED_BACK]
    assert w.read("a.csv") == b"id\n1\n2\n" and w.read("processed/a.csv") is None
    clock.now += 2
    poller.poll()
    again = {c.file.path: c for c in poller.poll().ready}
    assert again["a.csv"].version == 2 and again["a.csv"].file.version_id != first.version_id
    assert store.stat("a.csv") == again["a.csv"].file  # what processors will check


# -- write (export deliveries) --------------------------------------------------------------------


class _Pattern(io.RawIOBase):
    """A non-seekable source of ``size`` bytes made on the fly (never whole in memory); it
    raises after ``fail_at`` bytes when asked to."""

    def __init__(self, size: int, fail_at: int | None = None) -> None:
        self.size, self.fail_at, self.pos = size, fail_at, 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise OSError("the source broke")
        n = min(len(buffer), self.size - self.pos, 64 * 1024)
        block = bytes((self.pos + i) % 251 for i in range(n))
        buffer[:n] = block
        self.digest.update(block)
        self.pos += n
        return n


def _temp_files(store: FileStore) -> list[str]:
    return [e.path for e in store.iter_entries() if ".callstream-" in e.path]


def test_write_creates_folders_reads_back_and_replaces(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    written = store.write("exports/2026/11/report.csv", io.BytesIO(b"case_id\n1\n"))
    assert w.read("exports/2026/11/report.csv") == b"case_id\n1\n"
    assert written == store.stat("exports/2026/11/report.csv")
    assert written.path == "exports/2026/11/report.csv" and written.size == 10
    again = store.write("exports/2026/11/report.csv", io.BytesIO(b"case_id\n2\n3\n"))
    assert w.read("exports/2026/11/report.csv") == b"case_id\n2\n3\n" and again.size == 12
    with pytest.raises(TargetExists):
        store.write("exports/2026/11/report.csv", io.BytesIO(b"x"), replace=False)
    assert w.read("exports/2026/11/report.csv") == b"case_id\n2\n3\n"
    store.write("exports/new.csv", io.BytesIO(b""), replace=False)
    assert w.read("exports/new.csv") == b""
    assert _temp_files(store) == []


def test_write_streams_a_large_source(store_and_writer: tuple[FileStore, Writer]) -> None:
    """9 MiB from a non-seekable source: a multipart upload on S3, pipelined writes on SFTP."""
    store, _w = store_and_writer
    source = _Pattern(9 * 1024 * 1024 + 3)
    written = store.write("big/out.bin", source)
    assert written.size == source.size
    digest = hashlib.sha256()
    with store.open("big/out.bin") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == source.digest.hexdigest()
    assert _temp_files(store) == []


def test_write_refuses_traversal_and_leaves_nothing_when_the_source_breaks(
    store_and_writer: tuple[FileStore, Writer],
) -> None:
    store, w = store_and_writer
    for bad in ("../x.csv", "/etc/x.csv", "exports/../../x.csv", "", "a\nb.csv"):
        with pytest.raises(UnsafePath):
            store.write(bad, io.BytesIO(b"x"))
    with pytest.raises(ConnectorError):
        store.write("a.csv", _Pattern(3 * 1024 * 1024, fail_at=1024 * 1024))
    assert w.read("a.csv") == b"id\n1\n"  # the old version is untouched
    with pytest.raises(ConnectorError):
        store.write("exports/broken.csv", _Pattern(100_000, fail_at=0))
    assert w.read("exports/broken.csv") is None
    assert _temp_files(store) == []
