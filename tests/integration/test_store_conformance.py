"""One conformance suite for every file store (local folder, SFTP; S3 joins later).

Each store is given the same tree on disk and must list, stat, open, move and delete the same
way, and refuse the same unsafe things.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.sshd import SftpServer
from support import chown_tree, sftp_config

from connectors.base import FileStore, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import FileVanished, NotARegularFile, UnsafePath
from connectors.local import LocalConfig, LocalStore
from connectors.sftp import SftpStore


@pytest.fixture(params=["local", "sftp"])
def store_and_root(
    request: pytest.FixtureRequest, tmp_path: Path, sftp_server: SftpServer, clean_upload: Path
) -> Iterator[tuple[FileStore, Path]]:
    """A connected store and the folder on disk that is its root."""
    if request.param == "local":
        root = tmp_path / "root"
        root.mkdir()
        store: FileStore = LocalStore(LocalConfig(root=root))
    else:
        root = clean_upload
        store = SftpStore(sftp_config(sftp_server, read_window_bytes=64 * 1024))
    _make_tree(root)
    if request.param == "sftp":
        chown_tree(root, root)
    store.connect()
    try:
        yield store, root
    finally:
        store.close()


def _make_tree(root: Path) -> None:
    (root / "calls/2026/11").mkdir(parents=True)
    (root / "a.csv").write_bytes(b"id\n1\n")
    (root / "calls/2026/11/b.csv").write_bytes(b"id\n2\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "link.csv").symlink_to(root / "a.csv")
    (root / "dirlink").symlink_to(root / "calls")
    os.mkfifo(root / "fifo.csv")
    os.utime(root / "a.csv", (1_700_000_000, 1_700_000_000))


def test_lists_regular_files_recursively_and_skips_the_rest(
    store_and_root: tuple[FileStore, Path],
) -> None:
    store, _root = store_and_root
    entries = list(store.iter_entries())
    files = {e.path: e for e in entries if isinstance(e, RemoteFile)}
    skipped = {e.path: e.reason for e in entries if isinstance(e, SkippedEntry)}
    assert sorted(files) == ["a.csv", "big.bin", "calls/2026/11/b.csv"]
    assert files["a.csv"].size == 5 and files["a.csv"].mtime == 1_700_000_000
    assert skipped == {
        "link.csv": SkipReason.SYMLINK,
        "dirlink": SkipReason.SYMLINK,
        "fifo.csv": SkipReason.SPECIAL_FILE,
    }


def test_prune_keeps_listing_out_of_folders(store_and_root: tuple[FileStore, Path]) -> None:
    store, _root = store_and_root
    paths = [e.path for e in store.iter_entries(lambda folder: folder == "calls")]
    assert not [p for p in paths if p.startswith("calls/")]


def test_open_streams_the_exact_bytes(store_and_root: tuple[FileStore, Path]) -> None:
    store, root = store_and_root
    digest = hashlib.sha256()
    with store.open("big.bin") as fh:
        while chunk := fh.read(100_000):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256((root / "big.bin").read_bytes()).hexdigest()


def test_stat_reports_the_current_version(store_and_root: tuple[FileStore, Path]) -> None:
    store, root = store_and_root
    first = store.stat("calls/2026/11/b.csv")
    assert first is not None and first.size == 5
    (root / "calls/2026/11/b.csv").write_bytes(b"id\n2\n3\n")
    os.utime(root / "calls/2026/11/b.csv", (1_800_000_000, 1_800_000_000))
    second = store.stat("calls/2026/11/b.csv")
    assert second is not None and second.version_id != first.version_id
    assert store.stat("nope.csv") is None


def test_refuses_unsafe_paths_and_non_regular_files(
    store_and_root: tuple[FileStore, Path],
) -> None:
    store, _root = store_and_root
    for bad in ("../x", "/etc/passwd", "calls/../../x", ""):
        with pytest.raises(UnsafePath):
            store.open(bad)
    for special in ("link.csv", "fifo.csv"):
        with pytest.raises(NotARegularFile):
            store.open(special)
    with pytest.raises(FileVanished):
        store.open("missing.csv")


def test_move_creates_folders_replaces_target_and_delete_removes(
    store_and_root: tuple[FileStore, Path],
) -> None:
    store, root = store_and_root
    store.move("a.csv", "processed/a.csv")
    assert (root / "processed/a.csv").read_bytes() == b"id\n1\n"
    (root / "a.csv").write_bytes(b"id\n9\n")  # same name uploaded again, processed again
    store.move("a.csv", "processed/a.csv")
    assert (root / "processed/a.csv").read_bytes() == b"id\n9\n"
    store.delete("processed/a.csv")
    assert not (root / "processed/a.csv").exists()
    store.delete("processed/a.csv")  # already gone: no error
    with pytest.raises(FileVanished):
        store.move("a.csv", "processed/a.csv")
