"""The shared poller: completeness, de-duplication, versions and clean-up.

The store is an in-memory fake implementing :class:`connectors.base.FileStore`; the clock is a
controllable function passed to ``Poller(clock=...)``.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from connectors.base import FileStore, Prune, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    ConnectorError,
    FileVanished,
    NotARegularFile,
    StoreUnavailable,
    TargetExists,
    UnsafePath,
)
from connectors.poller import (
    Candidate,
    CleanupAction,
    CleanupPolicy,
    CleanupStep,
    KnownFile,
    Outcome,
    PollConfig,
    Poller,
    PollResult,
)

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryStore:
    """An in-memory FileStore: files by path, plus entries the store refuses to serve."""

    description = "memory://test"

    def __init__(self) -> None:
        self.files: dict[str, RemoteFile] = {}
        self.specials: dict[str, SkippedEntry] = {}
        self.not_regular: set[str] = set()

    # -- test helpers ------------------------------------------------------------------------

    def put(
        self, path: str, size: int = 100, mtime: float = T0 - 60, etag: str | None = None
    ) -> None:
        self.files[path] = RemoteFile(path, size, mtime, etag)

    def put_special(self, path: str, reason: SkipReason) -> None:
        self.specials[path] = SkippedEntry(path, reason, "fake")

    # -- FileStore -----------------------------------------------------------------------------

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def _pruned(path: str, prune: Prune | None) -> bool:
        if prune is None:
            return False
        parts = path.split("/")[:-1]
        return any(prune("/".join(parts[: i + 1])) for i in range(len(parts)))

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]:
        entries: dict[str, RemoteFile | SkippedEntry] = {**self.files, **self.specials}
        for path in sorted(entries):
            if not self._pruned(path, prune):
                yield entries[path]

    def stat(self, path: str) -> RemoteFile | None:
        if path in self.not_regular:
            raise NotARegularFile(path)
        return self.files.get(path)

    def open(self, path: str) -> BinaryIO:
        if path not in self.files:
            raise FileVanished(path)
        return io.BytesIO(b"x" * self.files[path].size)

    def move(self, src: str, dst: str, *, replace: bool = True) -> None:
        if src not in self.files:
            raise FileVanished(src)
        if not replace and dst in self.files:
            raise TargetExists(dst)
        f = self.files.pop(src)
        self.files[dst] = RemoteFile(dst, f.size, f.mtime, f.etag)

    def delete(self, path: str) -> None:
        self.files.pop(path, None)


def _protocol_check(store: MemoryStore) -> FileStore:
    return store  # mypy: the fake satisfies the protocol


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def make_poller(store: MemoryStore, clock: Clock, **config: object) -> Poller:
    config.setdefault("min_age_seconds", 5.0)
    return Poller(_protocol_check(store), PollConfig.model_validate(config), clock=clock)


def ready_paths(result: PollResult) -> list[str]:
    return [c.file.path for c in result.ready]


def announce(poller: Poller, clock: Clock) -> list[Candidate]:
    """Poll until the store's complete files are ready, and mark them announced."""
    ready: list[Candidate] = []
    for _ in range(2):
        ready = poller.poll().ready
        clock.advance(10)
    poller.mark_announced(ready)
    return ready


# -- completeness -------------------------------------------------------------------------------


def test_a_new_file_is_ready_on_the_second_poll_if_unchanged(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("in/a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock)

    first = poller.poll()
    assert first.ready == []
    assert first.pending == 1
    assert first.listed == 1
    assert first.skipped[SkipReason.UNSTABLE] == 1

    clock.advance(10)
    second = poller.poll()
    assert [(c.file, c.version) for c in second.ready] == [(RemoteFile("in/a.csv", 10, T0 - 60), 1)]
    assert second.pending == 0


@pytest.mark.parametrize(
    "change", [{"size": 20}, {"mtime": T0 - 30}, {"size": 20, "mtime": T0 - 30}]
)
def test_a_file_that_changed_between_polls_is_not_ready(
    store: MemoryStore, clock: Clock, change: dict[str, float]
) -> None:
    store.put("a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock)
    poller.poll()

    clock.advance(10)
    store.put("a.csv", **{"size": 10, "mtime": T0 - 60, **change})  # type: ignore[arg-type]
    result = poller.poll()
    assert result.ready == []
    assert result.skipped[SkipReason.UNSTABLE] == 1

    clock.advance(10)
    assert ready_paths(poller.poll()) == ["a.csv"]  # once it holds still, it is ready


def test_a_file_still_being_appended_to_is_never_ready(store: MemoryStore, clock: Clock) -> None:
    poller = make_poller(store, clock)
    for size in range(1, 6):
        store.put("a.csv", size=size * 1000, mtime=clock() - 30)
        assert poller.poll().ready == []
        clock.advance(10)


def test_a_file_younger_than_min_age_is_not_ready(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv", mtime=T0 - 1)
    poller = make_poller(store, clock, min_age_seconds=30)

    for _ in range(3):
        result = poller.poll()
        assert result.ready == []
        assert result.skipped[SkipReason.TOO_YOUNG] == 1
        assert result.pending == 1
        clock.advance(5)  # 16 s old at most

    clock.advance(20)
    assert ready_paths(poller.poll()) == ["a.csv"]


def test_min_age_zero_still_needs_two_identical_observations(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", mtime=T0)
    poller = make_poller(store, clock, min_age_seconds=0)
    assert poller.poll().ready == []
    assert ready_paths(poller.poll()) == ["a.csv"]


def test_a_file_disappearing_between_polls_is_forgotten(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock)
    poller.poll()
    del store.files["a.csv"]
    assert poller.poll().ready == []
    store.put("a.csv")
    assert poller.poll().ready == []  # seen once again: not yet stable
    assert ready_paths(poller.poll()) == ["a.csv"]


# -- done markers -------------------------------------------------------------------------------


def test_done_marker_makes_a_file_ready_at_once_ignoring_min_age(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("in/a.csv", mtime=clock())  # brand new
    store.put("in/a.csv.done", size=0, mtime=clock())
    poller = make_poller(store, clock, done_marker_suffix=".done", min_age_seconds=3600)

    result = poller.poll()
    assert ready_paths(result) == ["in/a.csv"]
    assert result.ready[0].version == 1


def test_without_its_marker_a_file_is_never_ready(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv", mtime=T0 - 3600)
    poller = make_poller(store, clock, done_marker_suffix=".done")

    for _ in range(3):
        result = poller.poll()
        assert result.ready == []
        assert result.skipped[SkipReason.AWAITING_MARKER] == 1
        assert result.pending == 1
        clock.advance(60)

    store.put("a.csv.done", size=0)
    assert ready_paths(poller.poll()) == ["a.csv"]


def test_a_marker_older_than_its_file_does_not_count(store: MemoryStore, clock: Clock) -> None:
    """Yesterday's X.done beside today's half-uploaded X: X is not complete."""
    store.put("a.csv", size=10, mtime=T0 - 5)
    store.put("a.csv.done", size=0, mtime=T0 - 86_400)
    poller = make_poller(store, clock, done_marker_suffix=".done")

    for _ in range(3):
        result = poller.poll()
        assert result.ready == []
        assert result.skipped[SkipReason.STALE_MARKER] == 1
        assert result.pending == 1
        clock.advance(60)

    store.put("a.csv.done", size=0, mtime=T0 - 5)  # written in the same second as the file
    assert ready_paths(poller.poll()) == ["a.csv"]


def test_marker_files_are_never_announced(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv")
    store.put("a.csv.done", size=0)
    store.put("orphan.csv.done", size=0)  # marker without payload
    store.put("b.done", size=0)
    poller = make_poller(store, clock, done_marker_suffix=".done")

    announced: list[str] = []
    for _ in range(3):
        result = poller.poll()
        announced += ready_paths(result)
        poller.mark_announced(result.ready)
        clock.advance(60)
    assert announced == ["a.csv"]


def test_marker_mode_still_applies_include_and_exclude(store: MemoryStore, clock: Clock) -> None:
    for name in ["a.csv", "a.wav", "b.csv.tmp"]:
        store.put(name)
        store.put(name + ".done", size=0)
    poller = make_poller(store, clock, done_marker_suffix=".done", include=["*.csv", "*.tmp"])
    result = poller.poll()
    assert ready_paths(result) == ["a.csv"]
    assert result.skipped[SkipReason.EXCLUDED] == 2


# -- de-duplication and versions ----------------------------------------------------------------


def test_an_announced_unchanged_file_is_never_ready_again(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock)
    assert [c.version for c in announce(poller, clock)] == [1]

    for _ in range(5):
        result = poller.poll()
        assert result.ready == []
        assert result.pending == 0
        clock.advance(60)


def test_until_marked_announced_a_ready_file_is_returned_again(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock)
    poller.poll()
    first = poller.poll().ready
    second = poller.poll().ready  # the caller crashed before recording: nothing is lost
    assert first == second
    assert [c.file.path for c in first] == ["a.csv"]


def test_a_reupload_with_new_content_is_ready_with_the_next_version(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock)
    (v1,) = announce(poller, clock)

    store.put("a.csv", size=12, mtime=clock() - 30)
    assert poller.poll().ready == []  # new content must hold still too
    clock.advance(10)
    (v2,) = poller.poll().ready
    poller.mark_announced([v2])

    store.put("a.csv", size=12, mtime=clock() - 20)  # same size, new mtime
    poller.poll()
    clock.advance(10)
    (v3,) = poller.poll().ready

    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert len({v1.file.version_id, v2.file.version_id, v3.file.version_id}) == 3
    assert v2.file.size == 12


def test_a_new_etag_alone_is_a_new_version(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv", etag="one")
    poller = make_poller(store, clock)
    announce(poller, clock)

    store.put("a.csv", etag="two")  # same size and mtime: an S3 overwrite within a second
    result = poller.poll()
    assert [(c.file.etag, c.version) for c in result.ready] == [("two", 2)]


def test_known_state_from_before_a_restart_suppresses_reannouncement(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10)
    store.put("b.csv", size=20)
    known = {"a.csv": KnownFile(store.files["a.csv"].version_id, version=4)}
    poller = Poller(store, PollConfig(min_age_seconds=5), known=known, clock=clock)

    poller.poll()
    clock.advance(10)
    result = poller.poll()
    assert [(c.file.path, c.version) for c in result.ready] == [("b.csv", 1)]

    store.put("a.csv", size=11)
    poller.poll()
    clock.advance(10)
    assert [(c.file.path, c.version) for c in poller.poll().ready] == [("a.csv", 5), ("b.csv", 1)]


def test_the_known_mapping_passed_in_is_not_modified(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv")
    known: dict[str, KnownFile] = {}
    poller = Poller(store, PollConfig(min_age_seconds=5), known=known, clock=clock)
    announce(poller, clock)
    assert known == {}
    assert set(poller.known) == {"a.csv"}


def test_max_announce_per_poll_caps_ready_and_the_rest_come_next_poll(
    store: MemoryStore, clock: Clock
) -> None:
    names = [f"f{i}.csv" for i in range(5)]
    for name in names:
        store.put(name)
    poller = make_poller(store, clock, max_announce_per_poll=2)
    poller.poll()

    batches: list[list[str]] = []
    for _ in range(4):
        clock.advance(10)
        result = poller.poll()
        batches.append(ready_paths(result))
        assert len(result.ready) + result.pending == 5 - sum(map(len, batches[:-1]))
        poller.mark_announced(result.ready)

    assert [len(b) for b in batches] == [2, 2, 1, 0]
    assert sorted(p for batch in batches for p in batch) == names


# -- listing ------------------------------------------------------------------------------------


def test_processed_and_invalid_folders_are_not_listed(store: MemoryStore, clock: Clock) -> None:
    store.put("processed/a.csv")
    store.put("processed/deep/b.csv")
    store.put("invalid/c.csv")
    store.put("in/d.csv")
    store.put("in/processed/e.csv")  # only the top-level folders are reserved
    store.put("processed.csv")
    poller = make_poller(store, clock)

    poller.poll()
    result = poller.poll()
    assert ready_paths(result) == ["in/d.csv", "in/processed/e.csv", "processed.csv"]
    assert result.listed == 3


def test_custom_processed_and_invalid_folders_are_not_listed(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("archive/ok/a.csv")
    store.put("archive/bad/b.csv")
    store.put("archive/c.csv")
    store.put("processed/d.csv")  # an ordinary folder now
    poller = make_poller(store, clock, processed_dir="./archive//ok", invalid_dir="archive/bad")

    poller.poll()
    assert ready_paths(poller.poll()) == ["archive/c.csv", "processed/d.csv"]


def test_skipped_entries_are_counted_by_reason(store: MemoryStore, clock: Clock) -> None:
    store.put_special("link.csv", SkipReason.SYMLINK)
    store.put_special("in/link-dir", SkipReason.SYMLINK)
    store.put_special("fifo", SkipReason.SPECIAL_FILE)
    store.put_special("bad\\name", SkipReason.UNSAFE_NAME)
    store.put(".profile")
    store.put("upload.csv.part")
    store.put("x.tmp")
    store.put("young.csv", mtime=T0)
    store.put("new.csv")
    poller = make_poller(store, clock)

    result = poller.poll()
    assert result.listed == 5
    assert result.skipped == Counter(
        {
            SkipReason.SYMLINK: 2,
            SkipReason.SPECIAL_FILE: 1,
            SkipReason.UNSAFE_NAME: 1,
            SkipReason.EXCLUDED: 3,
            SkipReason.TOO_YOUNG: 1,
            SkipReason.UNSTABLE: 1,
        }
    )
    assert sorted(e.path for e in result.skipped_entries) == [
        "bad\\name",
        "fifo",
        "in/link-dir",
        "link.csv",
    ]
    assert result.pending == 2


@pytest.mark.parametrize(
    "path",
    [
        "in/two\nlines.csv",
        "in/bell\x07.csv",
        "in/del\x7f.csv",
        "tab\there/a.csv",
        "in/" + "x" * 1022,  # 1025 characters: longer than the state table's path column
    ],
)
def test_a_path_with_a_control_character_or_too_long_is_never_announced(
    store: MemoryStore, clock: Clock, path: str
) -> None:
    store.put(path)
    store.put("in/ok.csv")
    poller = make_poller(store, clock)
    poller.poll()
    clock.advance(10)
    result = poller.poll()
    assert ready_paths(result) == ["in/ok.csv"]
    assert result.skipped[SkipReason.UNSAFE_NAME] == 1
    assert [e.path for e in result.skipped_entries] == [path]


def test_a_path_of_exactly_the_column_width_is_announced(store: MemoryStore, clock: Clock) -> None:
    path = "in/" + "x" * 1021
    assert len(path) == 1024
    store.put(path)
    poller = make_poller(store, clock)
    poller.poll()
    assert ready_paths(poller.poll()) == [path]


def test_include_globs_select_what_is_announced(store: MemoryStore, clock: Clock) -> None:
    for path in ["a.csv", "x/b.csv", "recordings/r.wav", "recordings/2024/r.wav", "r.wav", "n.txt"]:
        store.put(path)
    poller = make_poller(store, clock, include=["*.csv", "recordings/**/*.wav"])
    poller.poll()
    result = poller.poll()
    assert sorted(ready_paths(result)) == [
        "a.csv",
        "recordings/2024/r.wav",
        "recordings/r.wav",
        "x/b.csv",
    ]
    assert result.skipped[SkipReason.EXCLUDED] == 2


# -- clean-up -----------------------------------------------------------------------------------
#
# Clean-up never acts on the verdict alone: it waits until the file has been quiet for
# min_age_seconds after the decision (5 s here; delete: the settle window, 4 x min_age = 20 s),
# re-checks the file, and after a move watches the moved file for the settle window.


def judge(
    poller: Poller, c: Candidate, outcome: Outcome | str, clock: Clock
) -> CleanupAction | None:
    """Deliver downstream's verdict on an announced candidate, decided now."""
    return poller.note_outcome(c.file.path, c.file.version_id, Outcome(outcome), clock())


def run_due(poller: Poller) -> list[CleanupAction]:
    """Take every clean-up step that is due now; return their actions."""
    steps = [poller.cleanup_step(path) for path in poller.due_cleanups()]
    return [s.action for s in steps if s is not None]


def clean_up(
    poller: Poller, c: Candidate, outcome: Outcome | str, clock: Clock
) -> list[CleanupAction]:
    """Judge, then let the quiet period and the settle window pass; return every action."""
    judge(poller, c, outcome, clock)
    actions: list[CleanupAction] = []
    for _ in range(6):
        clock.advance(5)
        actions += run_due(poller)
    return actions


@pytest.mark.parametrize(
    ("policy", "outcome", "actions", "where"),
    [
        ("keep", "processed", [CleanupAction.KEPT], "in/a.csv"),
        ("keep", "partial", [CleanupAction.KEPT], "in/a.csv"),
        ("keep", "invalid", [CleanupAction.KEPT], "in/a.csv"),
        (
            "move",
            "processed",
            [CleanupAction.MOVED_PROCESSED, CleanupAction.SETTLED],
            "processed/in/a.csv",
        ),
        (
            "move",
            "partial",
            [CleanupAction.MOVED_INVALID, CleanupAction.SETTLED],
            "invalid/in/a.csv",
        ),
        (
            "move",
            "invalid",
            [CleanupAction.MOVED_INVALID, CleanupAction.SETTLED],
            "invalid/in/a.csv",
        ),
        ("delete", "processed", [CleanupAction.DELETED], None),
        (
            "delete",
            "partial",
            [CleanupAction.MOVED_INVALID, CleanupAction.SETTLED],
            "invalid/in/a.csv",
        ),
        (
            "delete",
            "invalid",
            [CleanupAction.MOVED_INVALID, CleanupAction.SETTLED],
            "invalid/in/a.csv",
        ),
    ],
)
def test_cleanup_applies_the_policy_and_never_deletes_rejected_rows(
    store: MemoryStore,
    clock: Clock,
    policy: str,
    outcome: str,
    actions: list[CleanupAction],
    where: str | None,
) -> None:
    store.put("in/a.csv", size=42)
    store.put("in/other.csv")
    poller = make_poller(store, clock, cleanup=policy)
    announced = {c.file.path: c for c in announce(poller, clock)}

    assert clean_up(poller, announced["in/a.csv"], outcome, clock) == actions
    expected = {"in/other.csv"} | ({where} if where else set())
    assert set(store.files) == expected
    if where:
        assert store.files[where].size == 42
    assert poller.due_cleanups() == []


@pytest.mark.parametrize(
    ("policy", "where"), [("delete", "invalid/a.csv"), ("move", "invalid/a.csv")]
)
def test_cleanup_accepts_plain_strings_for_outcome(
    store: MemoryStore, clock: Clock, policy: str, where: str
) -> None:
    """Outcomes arrive as strings from Kafka: 'invalid' must never be taken for 'processed'."""
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup=policy)
    (c,) = announce(poller, clock)
    poller.note_outcome("a.csv", c.file.version_id, "invalid", clock())  # type: ignore[arg-type]
    clock.advance(5)
    run_due(poller)
    assert set(store.files) == {where}


def test_nothing_is_moved_before_the_file_was_quiet_for_min_age_after_the_verdict(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup="move", min_age_seconds=30)
    (c,) = announce(poller, clock)
    clock.advance(30)

    assert judge(poller, c, "processed", clock) is CleanupAction.DEFERRED
    for _ in range(5):
        clock.advance(5.9)  # 29.5 s after the decision at most
        assert run_due(poller) == []
        assert set(store.files) == {"a.csv"}
    clock.advance(0.5)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    assert set(store.files) == {"processed/a.csv"}


def test_a_writer_resuming_before_the_move_makes_a_new_version_instead(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup="move")
    (v1,) = announce(poller, clock)
    judge(poller, v1, "processed", clock)
    clock.advance(3)
    store.put("a.csv", size=20, mtime=clock())  # the paused upload goes on
    clock.advance(2)

    assert run_due(poller) == [CleanupAction.SUPERSEDED]
    assert set(store.files) == {"a.csv"}
    clock.advance(10)
    poller.poll()
    clock.advance(10)
    assert [(c.file.size, c.version) for c in poller.poll().ready] == [(20, 2)]


def test_a_writer_resuming_into_the_moved_file_gets_it_moved_back_and_announced(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("in/a.csv", size=10)
    poller = make_poller(store, clock, cleanup="move")
    (v1,) = announce(poller, clock)
    judge(poller, v1, "processed", clock)
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]

    clock.advance(5)
    assert run_due(poller) == []  # unchanged so far: still settling
    store.put("processed/in/a.csv", size=25, mtime=clock())  # the writer had it open
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_BACK]
    assert set(store.files) == {"in/a.csv"}
    assert store.files["in/a.csv"].size == 25

    ready: list[Candidate] = []
    for _ in range(2):
        clock.advance(10)
        ready = poller.poll().ready
    assert [(c.file.path, c.file.size, c.version) for c in ready] == [("in/a.csv", 25, 2)]


def test_a_moved_file_that_changes_when_its_path_is_taken_stays_and_is_reported(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup="move")
    (v1,) = announce(poller, clock)
    judge(poller, v1, "processed", clock)
    clock.advance(5)
    run_due(poller)
    store.put("processed/a.csv", size=11, mtime=clock())
    store.put("a.csv", size=99, mtime=clock())  # a new upload under the same name

    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVE_BACK_BLOCKED]
    assert (store.files["a.csv"].size, store.files["processed/a.csv"].size) == (99, 11)
    clock.advance(60)
    assert run_due(poller) == []  # reported once


def test_a_moved_file_unchanged_for_the_settle_window_is_settled(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup="move", cleanup_settle_seconds=60)
    (c,) = announce(poller, clock)
    judge(poller, c, "processed", clock)
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    for _ in range(11):
        clock.advance(5)
        assert run_due(poller) == []
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.SETTLED]
    assert poller.due_cleanups() == []
    store.put("processed/a.csv", size=1, mtime=clock())  # no longer watched
    clock.advance(60)
    assert run_due(poller) == []
    assert set(store.files) == {"processed/a.csv"}


def test_delete_waits_for_the_settle_window_after_the_verdict(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup="delete", cleanup_settle_seconds=60)
    (c,) = announce(poller, clock)
    judge(poller, c, "processed", clock)
    clock.advance(59)
    assert run_due(poller) == []
    assert set(store.files) == {"a.csv"}
    clock.advance(1)
    assert run_due(poller) == [CleanupAction.DELETED]
    assert store.files == {}


def test_delete_of_a_file_changed_within_the_settle_window_is_superseded(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup="delete")
    (c,) = announce(poller, clock)
    judge(poller, c, "processed", clock)
    clock.advance(15)
    store.put("a.csv", size=30, mtime=clock())
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.SUPERSEDED]
    assert store.files["a.csv"].size == 30


@pytest.mark.parametrize(
    ("policy", "outcome", "remaining"),
    [
        ("move", "processed", {"processed/a.csv", "processed/a.csv.done"}),
        ("move", "invalid", {"invalid/a.csv", "invalid/a.csv.done"}),
        ("delete", "processed", set()),
        ("delete", "partial", {"invalid/a.csv", "invalid/a.csv.done"}),
        ("keep", "processed", {"a.csv", "a.csv.done"}),
    ],
)
def test_cleanup_takes_the_done_marker_along(
    store: MemoryStore, clock: Clock, policy: str, outcome: str, remaining: set[str]
) -> None:
    store.put("a.csv")
    store.put("a.csv.done", size=0)
    poller = make_poller(store, clock, cleanup=policy, done_marker_suffix=".done")
    (c,) = poller.poll().ready
    poller.mark_announced([c])

    clean_up(poller, c, outcome, clock)
    assert set(store.files) == remaining


@pytest.mark.parametrize("policy", ["move", "delete"])
def test_cleanup_succeeds_when_the_done_marker_is_already_gone(
    store: MemoryStore, clock: Clock, policy: str
) -> None:
    store.put("a.csv")
    store.put("a.csv.done", size=0)
    poller = make_poller(store, clock, cleanup=policy, done_marker_suffix=".done")
    (c,) = poller.poll().ready
    poller.mark_announced([c])
    del store.files["a.csv.done"]

    actions = clean_up(poller, c, "processed", clock)
    assert actions[0] in {CleanupAction.MOVED_PROCESSED, CleanupAction.DELETED}
    assert "a.csv" not in store.files


@pytest.mark.parametrize("policy", ["move", "delete"])
def test_cleanup_leaves_a_newer_version_alone(
    store: MemoryStore, clock: Clock, policy: str
) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup=policy)
    (old,) = announce(poller, clock)
    store.put("a.csv", size=99, mtime=clock() - 30)  # re-uploaded before the outcome arrived

    assert clean_up(poller, old, "processed", clock) == [CleanupAction.SUPERSEDED]
    assert set(store.files) == {"a.csv"}
    assert store.files["a.csv"].size == 99

    poller.poll()
    clock.advance(10)
    assert [c.version for c in poller.poll().ready] == [2]  # and the new version is announced


def test_a_verdict_on_an_older_version_is_ignored(store: MemoryStore, clock: Clock) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup="move")
    (v1,) = announce(poller, clock)
    store.put("a.csv", size=20, mtime=clock() - 30)
    assert [c.version for c in announce(poller, clock)] == [2]

    assert judge(poller, v1, "processed", clock) is None
    clock.advance(60)
    assert run_due(poller) == []
    assert set(store.files) == {"a.csv"}


def test_cleanup_of_a_path_that_is_no_longer_a_regular_file_is_superseded(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup="delete")
    (c,) = announce(poller, clock)
    store.not_regular.add("a.csv")

    assert clean_up(poller, c, "processed", clock) == [CleanupAction.SUPERSEDED]
    assert "a.csv" in store.files


@pytest.mark.parametrize("policy", ["move", "delete"])
def test_cleanup_of_a_missing_file_reports_missing(
    store: MemoryStore, clock: Clock, policy: str
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup=policy)
    (c,) = announce(poller, clock)
    del store.files["a.csv"]

    assert clean_up(poller, c, "processed", clock) == [CleanupAction.MISSING]


def test_cleanup_reports_missing_when_the_file_vanishes_during_the_move(
    store: MemoryStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup="move")
    (c,) = announce(poller, clock)

    def vanish(src: str, dst: str, *, replace: bool = True) -> None:
        raise FileVanished(src)

    monkeypatch.setattr(store, "move", vanish)
    assert clean_up(poller, c, "processed", clock) == [CleanupAction.MISSING]


def test_a_store_error_fails_that_clean_up_only_and_an_outage_is_retried(
    store: MemoryStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a.csv")
    store.put("b.csv")
    poller = make_poller(store, clock, cleanup="move")
    a, b = announce(poller, clock)
    judge(poller, a, "processed", clock)
    judge(poller, b, "processed", clock)
    clock.advance(5)
    real_move = store.move

    def refuse(src: str, dst: str, *, replace: bool = True) -> None:
        if src == "a.csv":
            raise ConnectorError("permission denied")
        raise StoreUnavailable("connection reset")

    monkeypatch.setattr(store, "move", refuse)
    assert poller.cleanup_step("a.csv") == CleanupStep(
        "a.csv", a.file.version_id, CleanupAction.FAILED, None, None, None
    )
    with pytest.raises(StoreUnavailable):
        poller.cleanup_step("b.csv")
    assert poller.due_cleanups() == ["b.csv"]  # still pending: tried again on the next poll

    monkeypatch.setattr(store, "move", real_move)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    assert set(store.files) == {"a.csv", "processed/b.csv"}


def test_note_outcome_refuses_a_path_outside_the_root(store: MemoryStore, clock: Clock) -> None:
    poller = make_poller(store, clock, cleanup="delete")
    with pytest.raises(UnsafePath):
        poller.note_outcome("../etc/passwd", "0" * 32, Outcome.PROCESSED, clock())


def test_cleanup_accepts_a_non_normal_path_for_the_same_file(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("in/a.csv")
    poller = make_poller(store, clock, cleanup="move")
    (c,) = announce(poller, clock)
    poller.note_outcome("./in//a.csv", c.file.version_id, Outcome.PROCESSED, clock())
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    assert set(store.files) == {"processed/in/a.csv"}


@pytest.mark.parametrize("policy", ["move", "delete"])
def test_a_file_reappearing_after_cleanup_is_a_new_version(
    store: MemoryStore, clock: Clock, policy: str
) -> None:
    store.put("a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock, cleanup=policy)
    (v1,) = announce(poller, clock)
    clean_up(poller, v1, "processed", clock)
    if policy == "move":
        del store.files["processed/a.csv"]

    store.put("a.csv", size=10, mtime=T0 - 60)  # byte-for-byte the same upload again
    assert store.files["a.csv"].version_id == v1.file.version_id
    ready: list[Candidate] = []
    for _ in range(2):
        ready = poller.poll().ready
        clock.advance(10)
    assert [(c.file.path, c.version) for c in ready] == [("a.csv", 2)]

    poller.mark_announced(ready)
    clock.advance(10)
    assert poller.poll().ready == []  # and, once announced, not again


def test_after_keep_cleanup_the_file_is_still_never_announced_twice(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    poller = make_poller(store, clock, cleanup=CleanupPolicy.KEEP)
    (c,) = announce(poller, clock)
    assert clean_up(poller, c, "processed", clock) == [CleanupAction.KEPT]

    for _ in range(3):
        assert poller.poll().ready == []
        clock.advance(10)


def test_moved_files_are_not_announced_from_the_processed_folder(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv")
    store.put("b.csv")
    poller = make_poller(store, clock, cleanup="move")
    for c in announce(poller, clock):
        judge(poller, c, "processed", clock)
    clock.advance(5)
    run_due(poller)
    assert set(store.files) == {"processed/a.csv", "processed/b.csv"}

    for _ in range(3):
        result = poller.poll()
        assert result.ready == []
        assert result.listed == 0
        clock.advance(10)


# -- incomplete files ---------------------------------------------------------------------------


def test_an_incomplete_file_is_not_cleaned_up_and_is_announced_again_after_the_grace(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock, cleanup="delete", incomplete_grace_seconds=300)
    (v1,) = announce(poller, clock)  # clock: T0 + 20

    assert judge(poller, v1, "incomplete", clock) is CleanupAction.INCOMPLETE
    while clock() < T0 + 235:  # mtime + grace = T0 + 240
        assert poller.poll().ready == []
        assert run_due(poller) == []
        clock.advance(10)
    assert set(store.files) == {"a.csv"}
    clock.advance(5)
    (again,) = poller.poll().ready
    assert (again.file, again.version, again.recheck) == (v1.file, 1, True)
    poller.mark_announced([again])
    clock.advance(10)
    assert poller.poll().ready == []  # once, until downstream says otherwise

    assert clean_up(poller, again, "partial", clock)[0] is CleanupAction.MOVED_INVALID
    assert set(store.files) == {"invalid/a.csv"}


def test_an_incomplete_file_that_grows_is_a_new_version_at_once(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10, mtime=T0 - 60)
    poller = make_poller(store, clock, cleanup="move", incomplete_grace_seconds=3600)
    (v1,) = announce(poller, clock)
    judge(poller, v1, "incomplete", clock)
    store.put("a.csv", size=40, mtime=clock())
    clock.advance(10)
    poller.poll()
    clock.advance(10)
    assert [(c.file.size, c.version, c.recheck) for c in poller.poll().ready] == [(40, 2, False)]


def test_a_repeated_incomplete_verdict_is_not_rechecked_in_a_tight_loop(
    store: MemoryStore, clock: Clock
) -> None:
    """A downstream clock running ahead says 'incomplete' again: wait min_age each time."""
    store.put("a.csv", mtime=T0 - 600)
    poller = make_poller(store, clock, incomplete_grace_seconds=300, min_age_seconds=30)
    (v1,) = announce(poller, clock)
    judge(poller, v1, "incomplete", clock)
    clock.advance(20)
    assert poller.poll().ready == []
    clock.advance(10)
    assert [c.recheck for c in poller.poll().ready] == [True]


# -- restarts -----------------------------------------------------------------------------------


def _restarted(poller: Poller, store: MemoryStore, clock: Clock) -> Poller:
    """A new poller over what the old one would have recorded durably."""
    known = {
        path: KnownFile(
            k.version_id,
            k.version,
            k.size,
            k.mtime,
            outcome=k.outcome,
            decided_at=k.decided_at,
            stage=k.stage,
            cleaned_at=k.cleaned_at,
            moved_to=k.moved_to,
        )
        for path, k in poller.known.items()
    }
    return Poller(store, poller.config, known=known, clock=clock)


def test_pending_settling_and_recheck_survive_a_restart(store: MemoryStore, clock: Clock) -> None:
    for name in ("pending.csv", "settling.csv", "recheck.csv"):
        store.put(name, mtime=T0 - 60)
    poller = make_poller(store, clock, cleanup="move", incomplete_grace_seconds=120)
    by_path = {c.file.path: c for c in announce(poller, clock)}
    judge(poller, by_path["settling.csv"], "processed", clock)
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    judge(poller, by_path["pending.csv"], "invalid", clock)
    judge(poller, by_path["recheck.csv"], "incomplete", clock)

    poller = _restarted(poller, store, clock)
    store.put("processed/settling.csv", size=7, mtime=clock())  # a writer resumed meanwhile
    assert run_due(poller) == [CleanupAction.MOVED_BACK]  # looked at once after the restart
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_INVALID]
    clock.advance(40)  # mtime + grace passed
    assert [(c.file.path, c.recheck) for c in poller.poll().ready] == [("recheck.csv", True)]
    assert set(store.files) == {"invalid/pending.csv", "recheck.csv", "settling.csv"}


def test_a_move_done_before_a_crash_but_not_recorded_is_recognised(
    store: MemoryStore, clock: Clock
) -> None:
    store.put("a.csv", size=10)
    poller = make_poller(store, clock, cleanup="move")
    (c,) = announce(poller, clock)
    judge(poller, c, "processed", clock)
    clock.advance(5)
    store.move("a.csv", "processed/a.csv")  # done, then the process died before recording it

    assert run_due(poller) == [CleanupAction.MOVED_PROCESSED]
    store.put("processed/a.csv", size=12, mtime=clock())
    clock.advance(5)
    assert run_due(poller) == [CleanupAction.MOVED_BACK]  # and it is watched as usual


@pytest.mark.parametrize("bad", ["../out", "/srv/processed", ""])
def test_poll_config_refuses_a_processed_folder_outside_the_root(bad: str) -> None:
    with pytest.raises((UnsafePath, ValueError)):
        PollConfig(processed_dir=bad)


# -- a writer's word (the hosted drop box) ------------------------------------------------------


def test_a_version_its_writer_closed_is_ready_at_once_and_only_once(
    store: MemoryStore, clock: Clock
) -> None:
    poller = make_poller(store, clock, min_age_seconds=30.0)
    store.put("data/a.csv", size=10, mtime=clock.now)  # just written: too young to be complete
    poller.note_complete(store.files["data/a.csv"])
    first = poller.poll()
    assert ready_paths(first) == ["data/a.csv"]
    poller.mark_announced(first.ready)
    assert ready_paths(poller.poll()) == []
    store.put("data/a.csv", size=12, mtime=clock.now + 1)  # re-uploaded, not yet reported
    assert ready_paths(poller.poll()) == []
    poller.note_complete(store.files["data/a.csv"])
    again = poller.poll()
    assert [(c.file.path, c.version) for c in again.ready] == [("data/a.csv", 2)]


def test_a_writers_word_about_another_version_does_not_count(
    store: MemoryStore, clock: Clock
) -> None:
    poller = make_poller(store, clock, min_age_seconds=30.0)
    store.put("data/a.csv", size=10, mtime=clock.now)
    poller.note_complete(RemoteFile("data/a.csv", 5, clock.now))  # a size the listing never shows
    assert ready_paths(poller.poll()) == []


def test_temporary_write_names_are_never_announced(store: MemoryStore, clock: Clock) -> None:
    poller = make_poller(store, clock, exclude=[])  # even with no exclude globs
    store.put("data/.a.csv.callstream-0123456789abcdef.part")
    poller.note_complete(store.files["data/.a.csv.callstream-0123456789abcdef.part"])
    assert ready_paths(poller.poll()) == []
    clock.advance(10)
    assert ready_paths(poller.poll()) == []
