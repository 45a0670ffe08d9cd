"""LocalStore against a real folder under tmp_path (no network, no servers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.base import RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    ConnectorError,
    FileVanished,
    NotARegularFile,
    StoreUnavailable,
    TargetExists,
    UnsafePath,
)
from connectors.local import LocalConfig, LocalStore
from connectors.poller import CleanupAction, Outcome, PollConfig, Poller


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"not yours")
    return folder


@pytest.fixture
def store(root: Path) -> LocalStore:
    s = LocalStore(LocalConfig(root=root))
    s.connect()
    return s


def write(root: Path, rel: str, data: bytes = b"data") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def listing(store: LocalStore) -> tuple[list[RemoteFile], list[SkippedEntry]]:
    files: list[RemoteFile] = []
    skipped: list[SkippedEntry] = []
    for entry in store.iter_entries():
        (skipped if isinstance(entry, SkippedEntry) else files).append(entry)  # type: ignore[arg-type]
    return files, skipped


# -- connect ------------------------------------------------------------------------------------


def test_connect_fails_when_the_folder_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        LocalStore(LocalConfig(root=tmp_path / "missing")).connect()


def test_connect_creates_the_folder_when_configured_to(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with LocalStore(LocalConfig(root=target, create=True)) as s:
        assert target.is_dir()
        assert list(s.iter_entries()) == []


def test_listing_a_root_that_was_removed_is_store_unavailable(tmp_path: Path) -> None:
    target = tmp_path / "gone"
    target.mkdir()
    s = LocalStore(LocalConfig(root=target))
    s.connect()
    target.rmdir()
    with pytest.raises(StoreUnavailable):
        list(s.iter_entries())


def test_description_names_the_folder(root: Path, store: LocalStore) -> None:
    assert store.description == f"file://{root}"


# -- listing ------------------------------------------------------------------------------------


def test_listing_reports_regular_files_with_relative_paths(root: Path, store: LocalStore) -> None:
    write(root, "b.csv", b"12345")
    write(root, "a/x.csv", b"1")
    write(root, "a/b/y.csv", b"12")
    write(root, "c/z.csv", b"123")
    (root / "empty").mkdir()

    files, skipped = listing(store)
    assert skipped == []
    assert sorted((f.path, f.size) for f in files) == [
        ("a/b/y.csv", 2),
        ("a/x.csv", 1),
        ("b.csv", 5),
        ("c/z.csv", 3),
    ]
    by_path = {f.path: f for f in files}
    assert by_path["b.csv"].mtime == os.stat(root / "b.csv").st_mtime
    assert by_path["b.csv"].etag is None


def test_listing_skips_symlinks_without_following_them(
    root: Path, outside: Path, store: LocalStore
) -> None:
    write(root, "real.csv")
    write(root, "sub/inner.csv")
    (root / "link-to-file.csv").symlink_to(outside / "secret.txt")
    (root / "link-to-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-inside").symlink_to(root / "sub", target_is_directory=True)
    (root / "dangling").symlink_to(root / "nowhere")

    files, skipped = listing(store)
    assert sorted(f.path for f in files) == ["real.csv", "sub/inner.csv"]
    assert sorted((e.path, e.reason) for e in skipped) == [
        ("dangling", SkipReason.SYMLINK),
        ("link-inside", SkipReason.SYMLINK),
        ("link-to-dir", SkipReason.SYMLINK),
        ("link-to-file.csv", SkipReason.SYMLINK),
    ]


def test_listing_skips_fifos_as_special_files(root: Path, store: LocalStore) -> None:
    write(root, "a.csv")
    os.mkfifo(root / "pipe")
    (root / "d").mkdir()
    os.mkfifo(root / "d" / "pipe2")

    files, skipped = listing(store)
    assert [f.path for f in files] == ["a.csv"]
    assert sorted((e.path, e.reason) for e in skipped) == [
        ("d/pipe2", SkipReason.SPECIAL_FILE),
        ("pipe", SkipReason.SPECIAL_FILE),
    ]


def test_listing_does_not_descend_into_pruned_folders(root: Path, store: LocalStore) -> None:
    write(root, "a.csv")
    write(root, "processed/old.csv")
    write(root, "x/processed/keep.csv")
    write(root, "x/skip/deep/no.csv")

    seen: list[str] = []

    def prune(folder: str) -> bool:
        seen.append(folder)
        return folder in {"processed", "x/skip"}

    paths = sorted(e.path for e in store.iter_entries(prune))
    assert paths == ["a.csv", "x/processed/keep.csv"]
    assert "x/skip/deep" not in seen


def test_listing_walks_depth_first_with_sorted_folders(root: Path, store: LocalStore) -> None:
    for rel in ["b/2.csv", "a/z/3.csv", "a/1.csv", "c.csv"]:
        write(root, rel)
    assert [e.path for e in store.iter_entries()] == ["c.csv", "a/1.csv", "a/z/3.csv", "b/2.csv"]


# -- open ---------------------------------------------------------------------------------------


def test_open_reads_the_whole_file(root: Path, store: LocalStore) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    write(root, "in/big.wav", payload)
    with store.open("./in//big.wav") as f:
        assert f.read() == payload


def test_open_refuses_a_symlink_to_a_file(root: Path, outside: Path, store: LocalStore) -> None:
    (root / "link.csv").symlink_to(outside / "secret.txt")
    with pytest.raises(NotARegularFile):
        store.open("link.csv")


def test_open_refuses_a_symlink_even_to_a_file_inside_the_root(
    root: Path, store: LocalStore
) -> None:
    write(root, "real.csv")
    (root / "link.csv").symlink_to(root / "real.csv")
    with pytest.raises(NotARegularFile):
        store.open("link.csv")


@pytest.mark.parametrize("path", ["../outside/secret.txt", "a/../../outside/secret.txt"])
def test_open_refuses_dot_dot_paths(
    root: Path, outside: Path, store: LocalStore, path: str
) -> None:
    with pytest.raises(UnsafePath):
        store.open(path)


def test_open_refuses_an_absolute_path(outside: Path, store: LocalStore) -> None:
    with pytest.raises(UnsafePath):
        store.open(str(outside / "secret.txt"))


def test_open_refuses_a_path_through_a_symlinked_folder_leading_out(
    root: Path, outside: Path, store: LocalStore
) -> None:
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        store.open("escape/secret.txt")


def test_open_refuses_a_fifo_without_blocking(root: Path, store: LocalStore) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(NotARegularFile):
        store.open("pipe")


def test_open_refuses_a_folder(root: Path, store: LocalStore) -> None:
    (root / "d").mkdir()
    with pytest.raises(NotARegularFile):
        store.open("d")


def test_open_of_a_missing_file_is_file_vanished(store: LocalStore) -> None:
    with pytest.raises(FileVanished):
        store.open("nope.csv")


# -- stat ---------------------------------------------------------------------------------------


def test_stat_returns_the_same_version_as_the_listing(root: Path, store: LocalStore) -> None:
    write(root, "a/b.csv", b"xyz")
    (listed,) = [e for e in store.iter_entries() if isinstance(e, RemoteFile)]
    stat = store.stat("./a//b.csv")
    assert stat == listed
    assert stat is not None
    assert stat.path == "a/b.csv"
    assert stat.version_id == listed.version_id


def test_stat_of_a_missing_file_is_none(store: LocalStore) -> None:
    assert store.stat("nope.csv") is None
    assert store.stat("no/such/folder/x.csv") is None


def test_stat_refuses_a_symlink(root: Path, store: LocalStore) -> None:
    write(root, "real.csv")
    (root / "link.csv").symlink_to(root / "real.csv")
    with pytest.raises(NotARegularFile):
        store.stat("link.csv")


def test_stat_refuses_paths_outside_the_root(store: LocalStore) -> None:
    with pytest.raises(UnsafePath):
        store.stat("../outside/secret.txt")


# -- move / delete ------------------------------------------------------------------------------


def test_move_creates_parent_folders(root: Path, store: LocalStore) -> None:
    write(root, "in/a.csv", b"payload")
    store.move("in/a.csv", "processed/in/a.csv")
    assert not (root / "in" / "a.csv").exists()
    assert (root / "processed" / "in" / "a.csv").read_bytes() == b"payload"


def test_move_replaces_the_target(root: Path, store: LocalStore) -> None:
    write(root, "a.csv", b"new")
    write(root, "processed/a.csv", b"old")
    store.move("a.csv", "processed/a.csv")
    assert (root / "processed" / "a.csv").read_bytes() == b"new"
    assert not (root / "a.csv").exists()


def test_move_of_a_missing_file_is_file_vanished(store: LocalStore) -> None:
    with pytest.raises(FileVanished):
        store.move("nope.csv", "processed/nope.csv")


@pytest.mark.parametrize(
    ("src", "dst"), [("a.csv", "../out/a.csv"), ("../outside/secret.txt", "x")]
)
def test_move_refuses_paths_outside_the_root(
    root: Path, outside: Path, store: LocalStore, src: str, dst: str
) -> None:
    write(root, "a.csv")
    with pytest.raises(UnsafePath):
        store.move(src, dst)
    assert (root / "a.csv").exists()
    assert (outside / "secret.txt").exists()


def test_move_refuses_a_target_folder_that_links_out(
    root: Path, outside: Path, store: LocalStore
) -> None:
    write(root, "a.csv")
    (root / "processed").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        store.move("a.csv", "processed/a.csv")
    assert (root / "a.csv").exists()
    assert not (outside / "a.csv").exists()


def test_move_into_a_folder_name_taken_by_a_file_raises_a_connector_error(
    root: Path, store: LocalStore
) -> None:
    write(root, "a.csv")
    write(root, "processed", b"someone uploaded a file with this name")
    with pytest.raises(ConnectorError):
        store.move("a.csv", "processed/a.csv")


def test_stat_through_a_regular_file_is_missing_or_a_connector_error(
    root: Path, store: LocalStore
) -> None:
    write(root, "in")  # the folder 'in' was replaced by a file
    try:
        result = store.stat("in/a.csv")
    except ConnectorError:
        return
    assert result is None


def test_delete_removes_the_file(root: Path, store: LocalStore) -> None:
    write(root, "a.csv")
    store.delete("a.csv")
    assert not (root / "a.csv").exists()


def test_delete_of_a_missing_file_is_a_no_op(root: Path, store: LocalStore) -> None:
    store.delete("nope.csv")
    store.delete("no/such/folder.csv")
    assert list(root.iterdir()) == []


def test_delete_refuses_paths_outside_the_root(outside: Path, store: LocalStore) -> None:
    with pytest.raises(UnsafePath):
        store.delete("../outside/secret.txt")
    assert (outside / "secret.txt").exists()


# -- resolution beneath the root ----------------------------------------------------------------


@pytest.fixture
def linked_folder(root: Path, outside: Path) -> Path:
    """``root/in`` is a real folder whose subfolder ``deep`` is a link to a folder outside."""
    write(root, "in/real/a.csv", b"inside")
    (root / "in" / "deep").symlink_to(outside, target_is_directory=True)
    return root / "in" / "deep"


def test_a_symlinked_intermediate_folder_is_refused_by_every_operation(
    root: Path, outside: Path, store: LocalStore, linked_folder: Path
) -> None:
    with pytest.raises(UnsafePath, match="symbolic link"):
        store.open("in/deep/secret.txt")
    with pytest.raises(UnsafePath):
        store.stat("in/deep/secret.txt")
    with pytest.raises(UnsafePath):
        store.move("in/deep/secret.txt", "processed/secret.txt")
    with pytest.raises(UnsafePath):
        store.move("in/real/a.csv", "in/deep/a.csv")
    with pytest.raises(UnsafePath):
        store.delete("in/deep/secret.txt")
    assert (outside / "secret.txt").read_bytes() == b"not yours"
    assert (root / "in" / "real" / "a.csv").read_bytes() == b"inside"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_symlinked_folder_pointing_inside_the_root_is_refused_too(
    root: Path, store: LocalStore
) -> None:
    write(root, "real/a.csv")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    with pytest.raises(UnsafePath):
        store.open("alias/a.csv")


def test_a_folder_swapped_for_a_link_during_the_call_is_refused(
    root: Path, outside: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link appears after the path was checked and before it is used: still refused."""
    write(root, "sub/secret.txt", b"ours")
    real_open = os.open
    swapped: list[str] = []

    def racing_open(
        path: object, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if not swapped:  # the first descriptor opened: any check is behind us
            swapped.append(str(path))
            (root / "sub").rename(root / "sub-moved")
            (root / "sub").symlink_to(outside, target_is_directory=True)
        return real_open(path, flags, mode, dir_fd=dir_fd)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    with pytest.raises(UnsafePath):
        store.open("sub/secret.txt")
    assert swapped


def test_a_folder_replaced_by_a_link_while_listing_is_skipped_not_followed(
    root: Path, outside: Path, store: LocalStore
) -> None:
    write(root, "a/one.csv")
    write(root, "b/two.csv")
    seen: list[str] = []
    for entry in store.iter_entries():
        seen.append(entry.path)
        if entry.path == "a/one.csv":  # 'b' is listed next: swap it for a link first
            (root / "b").rename(root / "b-moved")
            (root / "b").symlink_to(outside, target_is_directory=True)
    assert "b/secret.txt" not in seen
    assert seen == ["a/one.csv", "b"]


# -- unsafe names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["two\nlines.csv", "bell\x07.csv", "del\x7f.csv", "cr\r.csv"])
def test_names_with_control_characters_are_skipped_as_unsafe(
    root: Path, store: LocalStore, name: str
) -> None:
    write(root, f"in/{name}")
    write(root, "in/ok.csv")
    files, skipped = listing(store)
    assert [f.path for f in files] == ["in/ok.csv"]
    assert [(e.path, e.reason) for e in skipped] == [(f"in/{name}", SkipReason.UNSAFE_NAME)]


def test_paths_longer_than_the_state_column_are_skipped_as_unsafe(
    root: Path, store: LocalStore
) -> None:
    folder = "/".join(["f" * 250] * 4)  # 1003 characters
    write(root, f"{folder}/{'s' * 21}")  # 1025: one too many
    write(root, f"{folder}/{'k' * 20}")  # 1024: fits
    files, skipped = listing(store)
    assert [len(f.path) for f in files] == [1024]
    assert [(len(e.path), e.reason) for e in skipped] == [(1025, SkipReason.UNSAFE_NAME)]
    assert "longer than 1024" in skipped[0].detail


# -- move without replacing ---------------------------------------------------------------------


def test_move_without_replace_refuses_a_taken_target(root: Path, store: LocalStore) -> None:
    write(root, "processed/a.csv", b"moved earlier")
    write(root, "a.csv", b"new upload")
    with pytest.raises(TargetExists):
        store.move("processed/a.csv", "a.csv", replace=False)
    assert (root / "a.csv").read_bytes() == b"new upload"
    assert (root / "processed" / "a.csv").read_bytes() == b"moved earlier"

    (root / "a.csv").unlink()
    store.move("processed/a.csv", "a.csv", replace=False)
    assert (root / "a.csv").read_bytes() == b"moved earlier"
    assert not (root / "processed" / "a.csv").exists()


# -- with the poller ----------------------------------------------------------------------------


def due_actions(poller: Poller) -> list[CleanupAction]:
    """Take the clean-up steps due now; return what they did."""
    steps = [poller.cleanup_step(path) for path in poller.due_cleanups()]
    return [step.action for step in steps if step is not None]


def test_poller_over_a_local_folder_announces_moves_and_prunes(
    root: Path, store: LocalStore
) -> None:
    write(root, "calls/a.csv", b"a,b\n")
    write(root, "calls/a.csv.tmp", b"partial")
    (root / "link.csv").symlink_to(root / "calls" / "a.csv")
    now = [os.stat(root / "calls" / "a.csv").st_mtime + 3600]
    poller = Poller(store, PollConfig(cleanup="move"), clock=lambda: now[0])

    first = poller.poll()
    assert first.ready == []
    assert first.skipped[SkipReason.SYMLINK] == 1
    assert first.skipped[SkipReason.EXCLUDED] == 1
    (c,) = poller.poll().ready
    assert (c.file.path, c.version) == ("calls/a.csv", 1)
    poller.mark_announced([c])

    poller.note_outcome("calls/a.csv", c.file.version_id, Outcome.PROCESSED, now[0])
    now[0] += 5
    assert due_actions(poller) == [CleanupAction.MOVED_PROCESSED]
    assert (root / "processed" / "calls" / "a.csv").read_bytes() == b"a,b\n"
    for _ in range(2):
        assert poller.poll().ready == []  # processed/ is never listed


def test_a_writer_resuming_into_a_moved_local_file_gets_it_back(
    root: Path, store: LocalStore
) -> None:
    with (root / "a.csv").open("wb") as writer:
        writer.write(b"h\n1\n")
        writer.flush()
        now = [os.stat(root / "a.csv").st_mtime + 60]
        poller = Poller(store, PollConfig(cleanup="move"), clock=lambda: now[0])
        poller.poll()
        (c,) = poller.poll().ready
        poller.mark_announced([c])
        poller.note_outcome("a.csv", c.file.version_id, Outcome.PROCESSED, now[0])
        now[0] += 5
        assert due_actions(poller) == [CleanupAction.MOVED_PROCESSED]
        writer.write(b"2\n")  # the writer still holds the moved file open
        writer.flush()
    os.utime(root / "processed" / "a.csv", (now[0] + 1, now[0] + 1))
    now[0] += 5
    assert due_actions(poller) == [CleanupAction.MOVED_BACK]
    assert (root / "a.csv").read_bytes() == b"h\n1\n2\n"
    assert not (root / "processed" / "a.csv").exists()


def test_cleanup_does_not_touch_a_file_replaced_by_a_symlink(
    root: Path, outside: Path, store: LocalStore
) -> None:
    write(root, "a.csv")
    now = os.stat(root / "a.csv").st_mtime + 3600
    poller = Poller(store, PollConfig(cleanup="delete", min_age_seconds=0), clock=lambda: now)
    poller.poll()
    (c,) = poller.poll().ready
    poller.mark_announced([c])
    (root / "a.csv").unlink()
    (root / "a.csv").symlink_to(outside / "secret.txt")

    poller.note_outcome("a.csv", c.file.version_id, Outcome.PROCESSED, now)
    assert due_actions(poller) == [CleanupAction.SUPERSEDED]
    assert (root / "a.csv").is_symlink()
    assert (outside / "secret.txt").exists()


def test_temp_names_are_hidden_marked_unique_and_short() -> None:
    from connectors.base import temp_name

    long = "é" * 200 + ".csv"
    names = {temp_name(long) for _ in range(3)}
    assert len(names) == 3
    for name in names:
        assert name.startswith(".") and name.endswith(".part") and ".callstream-" in name
        assert len(name.encode()) <= 255
