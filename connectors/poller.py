"""One poller for every store: listing, completeness, version identity and clean-up.

A :class:`Poller` belongs to one connector. Each :meth:`Poller.poll` lists the store once and
returns the files that are *ready*: complete, matching the include/exclude globs, and a version
the connector has not announced yet. The caller (the connector runner) publishes them, records
them durably and then calls :meth:`Poller.mark_announced`; until it does, the same files are
returned again by the next poll, so a crash between publishing and recording duplicates an
announcement but never loses a file.

Completeness: with ``done_marker_suffix`` set, ``X`` is complete once ``X<suffix>`` is listed
beside it. Otherwise ``X`` must be at least ``min_age_seconds`` old *and* show the same size and
mtime in two consecutive polls (second-resolution SFTP timestamps alone cannot tell that a writer
is still appending).

Version identity is ``RemoteFile.version_id`` (path, size, mtime, checksum when known): an
unchanged file is never ready twice, a re-upload with new content is ready again with the next
version number. A file that was cleaned up (moved or deleted) and shows up again is a new version.

A writer that knows a file is complete (the hosted drop box renames an upload into place when
the client closes it) says so with :meth:`Poller.note_complete`: that exact version (size and
mtime) is ready at the next poll, without the age and stability checks or a marker. Temporary
write names (:func:`~connectors.base.is_temp_name`) are never announced.

Completeness also needs a fresh marker: a marker older than its file (yesterday's ``X.done``
beside today's half-uploaded ``X``) does not count. Entries whose path has a control character or
is longer than :data:`~connectors.paths.MAX_PATH_CHARS` are skipped as ``unsafe_name``.

Clean-up is a small durable state machine per file version, driven from the connector's own poll
loop (:meth:`Poller.due_cleanups`, :meth:`Poller.cleanup_step`) so that it never blocks the
consumption of outcomes and never runs two store calls at once:

- :meth:`Poller.note_outcome` records downstream's verdict. ``incomplete`` gets no clean-up: the
  same, unchanged version is ready again once ``now >= mtime + incomplete_grace_seconds``
  (stage ``recheck``). Every other outcome is ``pending``.
- A ``pending`` step acts only when the file still has the judged size and mtime and has been
  unchanged for ``min_age_seconds`` since the outcome was decided (``delete`` of a processed
  file: for the settle window). A changed file is a new version that the normal poll announces.
  ``partial`` and ``invalid`` files go to ``invalid/`` under ``move`` and ``delete`` alike.
- After a move the file is ``settling``: it is watched for the settle window, and if it changes
  (a writer resumed into the moved file) it is moved back to its path, where it is announced as
  a new version; if the path is taken meanwhile it stays and the step says so.

Each step returns a :class:`CleanupStep` that the caller records durably; a :class:`KnownFile`
loaded from that record resumes the machine after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors import paths
from connectors.base import FileStore, RemoteFile, SkippedEntry, SkipReason, is_temp_name
from connectors.errors import (
    ConnectorError,
    FileVanished,
    NotARegularFile,
    StoreUnavailable,
    TargetExists,
    UnsafePath,
)

log = logging.getLogger(__name__)


class CleanupPolicy(StrEnum):
    """What happens to a source file once downstream has committed it."""

    KEEP = "keep"
    """Leave it where it is (it is still never announced twice)."""
    MOVE = "move"
    """Move it under ``processed/`` or ``invalid/``, keeping its relative path."""
    DELETE = "delete"
    """Delete processed files once unchanged for the settle window; partial and invalid files
    are still moved to ``invalid/`` (rejected rows are never lost)."""


class Outcome(StrEnum):
    """Downstream's verdict on one file version."""

    PROCESSED = "processed"
    """Every row was accepted."""
    PARTIAL = "partial"
    """Some rows were dead-lettered: cleaned up like INVALID, so rejected rows stay recoverable."""
    INVALID = "invalid"
    """The file as a whole was rejected, or no row was accepted."""
    INCOMPLETE = "incomplete"
    """The last line is unterminated and the file is young: no clean-up, re-checked later."""


CLEANED_UP_AS_INVALID = frozenset({Outcome.PARTIAL, Outcome.INVALID})


class CleanupAction(StrEnum):
    """What clean-up did with a file version (a bounded metric label)."""

    DEFERRED = "deferred"
    """An outcome arrived; the action waits until the file has been quiet long enough."""
    INCOMPLETE = "incomplete"
    """An incomplete outcome arrived: nothing is cleaned, the version is re-checked later."""
    KEPT = "kept"
    MOVED_PROCESSED = "moved_processed"
    MOVED_INVALID = "moved_invalid"
    DELETED = "deleted"
    SETTLED = "settled"
    """A moved file stayed unchanged for the settle window: clean-up is over."""
    MOVED_BACK = "moved_back"
    """A moved file changed (a writer resumed into it): it went back to its path."""
    MOVE_BACK_BLOCKED = "move_back_blocked"
    """A moved file changed but its path is taken: it stays where it was moved (warning)."""
    MISSING = "missing"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class CleanupStage(StrEnum):
    """Where a version is in its clean-up (stored with it; none: nothing left to do)."""

    PENDING = "pending"
    """An outcome is recorded; the action is applied once the file has been quiet long enough."""
    SETTLING = "settling"
    """Moved to processed/ or invalid/; watched for the settle window."""
    RECHECK = "recheck"
    """Incomplete: announced again, unchanged, at ``mtime + incomplete_grace_seconds``."""


def stage_after(outcome: Outcome) -> CleanupStage:
    """Return the stage a newly recorded outcome puts its version in."""
    return CleanupStage.RECHECK if outcome == Outcome.INCOMPLETE else CleanupStage.PENDING


class PollConfig(BaseModel):
    """How one connector polls its store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_seconds: float = Field(10.0, gt=0, description="Pause between polls.")
    include: tuple[str, ...] = Field(
        ("**",),
        description="Globs a file must match. No '/': matched against the file name; "
        "with '/': against the path from the root ('**' spans folders).",
        examples=[["*.csv", "recordings/**/*.wav"]],
    )
    exclude: tuple[str, ...] = Field(
        (".*", "*.tmp", "*.part", "*.filepart"),
        description="Globs that exclude a file even if included (temporary upload names).",
    )
    min_age_seconds: float = Field(
        5.0, ge=0, description="A file's mtime must be at least this old to be complete."
    )
    done_marker_suffix: str | None = Field(
        None,
        description="If set, a file X is complete once X<suffix> exists (e.g. '.done'); "
        "marker files are never announced.",
        examples=[".done"],
    )
    cleanup: CleanupPolicy = Field(
        CleanupPolicy.KEEP, description="keep | move | delete, applied after downstream commits."
    )
    cleanup_settle_seconds: float | None = Field(
        None,
        ge=0,
        description="How long clean-up watches for a writer that resumes after a pause: a file "
        "moved to processed/ or invalid/ that changes within this window is moved back and "
        "announced again; under delete, a processed file is deleted only once it has been "
        "unchanged this long after its outcome. Unset: 4 x min_age_seconds.",
    )
    processed_dir: str = Field("processed", description="Folder for processed files (move).")
    invalid_dir: str = Field("invalid", description="Folder for files downstream rejected.")
    incomplete_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="A CSV/TSV whose last line is unterminated and incomplete is 'incomplete' "
        "until it has been unchanged this long; then it is processed as it is (the tail "
        "dead-lettered).",
    )
    max_announce_per_poll: int = Field(
        10_000, gt=0, description="Cap on files announced per poll; the rest wait for the next."
    )

    @property
    def settle_seconds(self) -> float:
        """The settle window in effect (see ``cleanup_settle_seconds``)."""
        if self.cleanup_settle_seconds is not None:
            return self.cleanup_settle_seconds
        return 4 * self.min_age_seconds

    @field_validator("processed_dir", "invalid_dir")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        try:
            return paths.normalize(value)
        except UnsafePath as exc:
            raise ValueError(str(exc)) from exc


@dataclass(slots=True)
class KnownFile:
    """The last announced version of a path and its clean-up, as recorded durably.

    Times are seconds since the epoch. ``cleaned_at`` is set once the version left its path
    (moved, deleted, found missing): a file showing up there again is a new version.
    """

    version_id: str
    version: int
    size: int = 0
    mtime: float = 0.0
    outcome: Outcome | None = None
    decided_at: float | None = None
    stage: CleanupStage | None = None
    cleaned_at: float | None = None
    moved_to: str | None = None

    @property
    def cleaned(self) -> bool:
        """Whether the version left its path."""
        return self.cleaned_at is not None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A complete file version to announce, with its per-path version number (1, 2, ...).

    ``recheck`` marks the re-announcement of an unchanged version downstream found incomplete.
    """

    file: RemoteFile
    version: int
    recheck: bool = False


@dataclass(frozen=True, slots=True)
class CleanupStep:
    """What one clean-up step did to a version, for the caller to record and count.

    ``stage``, ``cleaned_at`` and ``moved_to`` are the version's clean-up state after the step.
    """

    path: str
    version_id: str
    action: CleanupAction
    stage: CleanupStage | None
    cleaned_at: float | None
    moved_to: str | None


@dataclass(slots=True)
class PollResult:
    """What one poll saw."""

    listed: int = 0
    ready: list[Candidate] = field(default_factory=list)
    pending: int = 0
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    skipped_entries: list[SkippedEntry] = field(default_factory=list)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``**`` spans folders, ``*`` and ``?`` stay within one name."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^/" + body[1:]  # like '*' and '?', never crosses a folder
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class PathFilter:
    """Include/exclude globs.

    An include glob without '/' is matched against the file name; an exclude glob without '/'
    against every component, so ``.*`` also excludes everything under ``.cache/``. Globs with
    '/' are matched against the whole path.
    """

    def __init__(self, include: Iterable[str], exclude: Iterable[str]) -> None:
        self._include = [(("/" in g), glob_to_regex(g)) for g in include]
        self._exclude = [(("/" in g), glob_to_regex(g)) for g in exclude]

    @staticmethod
    def _any(globs: list[tuple[bool, re.Pattern[str]]], path: str, name: str) -> bool:
        return any(rx.match(path if full else name) for full, rx in globs)

    def __call__(self, path: str) -> bool:
        parts = path.split("/")
        if not self._any(self._include, path, parts[-1]):
            return False
        return not any(self._any(self._exclude, path, part) for part in parts)


class Poller:
    """Completeness, de-duplication and clean-up for one connector's store (see module doc).

    ``known`` is the durable record of announced versions, loaded by the caller at start. The
    poller is not thread-safe: call it from one executor thread at a time.
    """

    def __init__(
        self,
        store: FileStore,
        config: PollConfig,
        known: Mapping[str, KnownFile] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.known: dict[str, KnownFile] = dict(known or {})
        self._clock = clock
        self._filter = PathFilter(config.include, config.exclude)
        self._observed: dict[str, tuple[int, float]] = {}
        self._reserved = {config.processed_dir, config.invalid_dir}
        self._scheduled = {
            path
            for path, k in self.known.items()
            if k.stage in (CleanupStage.PENDING, CleanupStage.SETTLING)
        }
        self._next_check: dict[str, float] = {}
        self._complete: dict[str, tuple[int, float]] = {}

    def note_complete(self, file: RemoteFile) -> None:
        """Take the writer's word that this version of ``file.path`` is complete: it is ready
        at the next poll if the listing shows the same size and mtime."""
        self._complete[paths.normalize(file.path)] = (file.size, file.mtime)

    def _prune(self, folder: str) -> bool:
        return folder in self._reserved

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """List the store once and return the complete, not yet announced file versions."""
        result = PollResult()
        files: list[RemoteFile] = []
        for entry in self.store.iter_entries(self._prune):
            if isinstance(entry, RemoteFile) and not paths.is_safe_path(entry.path):
                entry = SkippedEntry(
                    entry.path, SkipReason.UNSAFE_NAME, paths.unsafe_reason(entry.path)
                )
            if isinstance(entry, SkippedEntry):
                result.skipped[entry.reason] += 1
                result.skipped_entries.append(entry)
                continue
            result.listed += 1
            files.append(entry)
        suffix = self.config.done_marker_suffix
        markers = {f.path: f.mtime for f in files if suffix and f.path.endswith(suffix)}
        now = self._clock()
        observed: dict[str, tuple[int, float]] = {}
        for f in files:
            if suffix and f.path.endswith(suffix):
                continue  # a marker, never a payload
            if not self._filter(f.path) or is_temp_name(f.path.rsplit("/", 1)[-1]):
                result.skipped[SkipReason.EXCLUDED] += 1
                continue
            known = self.known.get(f.path)
            recheck = False
            if known is not None and not known.cleaned and known.version_id == f.version_id:
                if known.stage != CleanupStage.RECHECK or now < self._recheck_at(known):
                    continue  # announced already, unchanged
                recheck = True  # incomplete, and unchanged for the grace period: once more
            elif self._complete.get(f.path) == (f.size, f.mtime):
                pass  # its writer said it is complete
            elif suffix:
                marker = markers.get(f.path + suffix)
                if marker is None or marker < f.mtime:
                    reason = (
                        SkipReason.AWAITING_MARKER if marker is None else SkipReason.STALE_MARKER
                    )
                    result.skipped[reason] += 1
                    result.pending += 1
                    continue
            else:
                shape = (f.size, f.mtime)
                observed[f.path] = shape
                if now - f.mtime < self.config.min_age_seconds:
                    result.skipped[SkipReason.TOO_YOUNG] += 1
                    result.pending += 1
                    continue
                if self._observed.get(f.path) != shape:
                    result.skipped[SkipReason.UNSTABLE] += 1
                    result.pending += 1
                    continue
            if len(result.ready) >= self.config.max_announce_per_poll:
                result.pending += 1
                continue
            if recheck and known is not None:
                result.ready.append(Candidate(f, known.version, recheck=True))
            else:
                result.ready.append(Candidate(f, known.version + 1 if known else 1))
        self._observed = observed
        listed = {f.path for f in files}
        for path in [p for p in self._complete if p not in listed]:
            del self._complete[path]  # gone (or moved away) before it was announced
        return result

    def _recheck_at(self, known: KnownFile) -> float:
        """When an incomplete version is announced again (never twice within min_age)."""
        grace_end = known.mtime + self.config.incomplete_grace_seconds
        return max(grace_end, (known.decided_at or 0.0) + self.config.min_age_seconds)

    def mark_announced(self, candidates: Iterable[Candidate]) -> None:
        """Remember versions the caller has published and recorded durably.

        A re-announced version keeps its recorded outcome (so an older verdict delivered late
        is recognised) but has no clean-up pending until a new outcome arrives.
        """
        for c in candidates:
            f = c.file
            prev = self.known.get(f.path)
            same = prev is not None and prev.version_id == f.version_id
            self.known[f.path] = KnownFile(
                f.version_id,
                c.version,
                f.size,
                f.mtime,
                outcome=prev.outcome if same and prev else None,
                decided_at=prev.decided_at if same and prev else None,
            )
            self._scheduled.discard(f.path)
            self._next_check.pop(f.path, None)
            if self._complete.get(f.path) == (f.size, f.mtime):
                del self._complete[f.path]

    # -- clean-up ------------------------------------------------------------------------------

    def note_outcome(
        self, path: str, version_id: str, outcome: Outcome, decided_at: float
    ) -> CleanupAction | None:
        """Record downstream's verdict on a version; return what it means now (None: stale).

        No store call: the action itself is a later :meth:`cleanup_step`.
        """
        path = paths.normalize(path)
        known = self.known.get(path)
        if known is None or known.version_id != version_id:
            return None
        outcome = Outcome(outcome)
        known.outcome, known.decided_at = outcome, decided_at
        known.stage = stage_after(outcome)
        self._next_check.pop(path, None)
        if known.stage == CleanupStage.RECHECK:
            self._scheduled.discard(path)
            return CleanupAction.INCOMPLETE
        self._scheduled.add(path)
        return None if self.config.cleanup == CleanupPolicy.KEEP else CleanupAction.DEFERRED

    def due_cleanups(self) -> list[str]:
        """Return the paths whose next clean-up step is due now."""
        now = self._clock()
        due = []
        for path in sorted(self._scheduled):
            known = self.known.get(path)
            at = self._due_at(path, known) if known is not None else None
            if at is None:
                self._scheduled.discard(path)
            elif now >= at:
                due.append(path)
        return due

    def _due_at(self, path: str, known: KnownFile) -> float | None:
        decided = known.decided_at or 0.0
        cfg = self.config
        if known.stage == CleanupStage.PENDING:
            if cfg.cleanup == CleanupPolicy.KEEP:
                return decided
            if cfg.cleanup == CleanupPolicy.DELETE and known.outcome == Outcome.PROCESSED:
                return decided + max(cfg.min_age_seconds, cfg.settle_seconds)
            return decided + cfg.min_age_seconds
        if known.stage == CleanupStage.SETTLING:
            return self._next_check.get(path, 0.0)  # after a restart: look at once
        return None

    def cleanup_step(self, path: str) -> CleanupStep | None:
        """Take the due clean-up step for ``path``; None if there was nothing to record.

        Raises :class:`~connectors.errors.StoreUnavailable` (the caller retries the whole poll
        later); any other store error ends this version's clean-up as ``failed``, logged.
        """
        known = self.known.get(path)
        if known is None or known.stage not in (CleanupStage.PENDING, CleanupStage.SETTLING):
            self._scheduled.discard(path)
            return None
        try:
            if known.stage == CleanupStage.PENDING:
                return self._act(path, known)
            return self._watch(path, known)
        except StoreUnavailable:
            raise
        except ConnectorError as exc:
            where = self.store.description
            log.error("cannot clean up %r in %s: %s; it stays where it is", path, where, exc)
            return self._finish(path, known, CleanupAction.FAILED)

    def _finish(
        self,
        path: str,
        known: KnownFile,
        action: CleanupAction,
        stage: CleanupStage | None = None,
        *,
        cleaned: bool | None = None,
        moved_to: str | None = None,
    ) -> CleanupStep:
        """Set the version's clean-up state after a step and describe it."""
        if cleaned is True and known.cleaned_at is None:
            known.cleaned_at = self._clock()
        elif cleaned is False:
            known.cleaned_at = None
        known.stage, known.moved_to = stage, moved_to
        if stage is None:
            self._scheduled.discard(path)
            self._next_check.pop(path, None)
        return CleanupStep(path, known.version_id, action, stage, known.cleaned_at, moved_to)

    def _destination(self, path: str, known: KnownFile) -> str | None:
        if known.outcome in CLEANED_UP_AS_INVALID:
            return f"{self.config.invalid_dir}/{path}"
        if self.config.cleanup == CleanupPolicy.MOVE:
            return f"{self.config.processed_dir}/{path}"
        return None

    def _act(self, path: str, known: KnownFile) -> CleanupStep:
        """Apply the policy to a pending version if it is still the judged one."""
        if self.config.cleanup == CleanupPolicy.KEEP:
            return self._finish(path, known, CleanupAction.KEPT)
        target = self._destination(path, known)
        try:
            current = self.store.stat(path)
        except NotARegularFile:
            return self._finish(path, known, CleanupAction.SUPERSEDED, cleaned=False)
        if current is None:
            if target is not None and self._holds_judged(target, known):
                # Moved before a crash kept us from recording it: carry on watching it.
                return self._moved(path, known, target)
            return self._finish(path, known, CleanupAction.MISSING, cleaned=True)
        if current.version_id != known.version_id:
            return self._finish(path, known, CleanupAction.SUPERSEDED, cleaned=False)
        suffix = self.config.done_marker_suffix
        try:
            if target is not None:
                self.store.move(path, target)
            else:
                self.store.delete(path)
        except FileVanished:
            return self._finish(path, known, CleanupAction.MISSING, cleaned=True)
        if suffix:
            marker = path + suffix
            try:
                if target is not None:
                    self.store.move(marker, target + suffix)
                else:
                    self.store.delete(marker)
            except FileVanished:
                log.info("done marker %r was already gone", marker)
        if target is None:
            return self._finish(path, known, CleanupAction.DELETED, cleaned=True)
        return self._moved(path, known, target)

    def _moved(self, path: str, known: KnownFile, target: str) -> CleanupStep:
        invalid = known.outcome in CLEANED_UP_AS_INVALID
        action = CleanupAction.MOVED_INVALID if invalid else CleanupAction.MOVED_PROCESSED
        step = self._finish(
            path, known, action, CleanupStage.SETTLING, cleaned=True, moved_to=target
        )
        self._next_check[path] = self._next_watch(known)
        self._scheduled.add(path)
        return step

    def _next_watch(self, known: KnownFile) -> float:
        """When to look at a settling file next: every min_age, and at the window's end."""
        cfg = self.config
        window_end = (known.cleaned_at or 0.0) + cfg.settle_seconds
        return min(self._clock() + cfg.min_age_seconds, window_end)

    def _holds_judged(self, target: str, known: KnownFile) -> bool:
        try:
            moved = self.store.stat(target)
        except NotARegularFile:
            return False
        return moved is not None and (moved.size, moved.mtime) == (known.size, known.mtime)

    def _watch(self, path: str, known: KnownFile) -> CleanupStep | None:
        """Look at a settling file: settled, still settling, or changed and moved back."""
        moved_to = known.moved_to
        if moved_to is None:
            return self._finish(path, known, CleanupAction.SETTLED)
        try:
            moved = self.store.stat(moved_to)
        except NotARegularFile:
            moved = None
        if moved is None:  # taken away (an operator archiving processed/): nothing to watch
            return self._finish(path, known, CleanupAction.SETTLED)
        if (moved.size, moved.mtime) == (known.size, known.mtime):
            if self._clock() >= (known.cleaned_at or 0.0) + self.config.settle_seconds:
                return self._finish(path, known, CleanupAction.SETTLED)
            self._next_check[path] = self._next_watch(known)
            return None
        try:
            self.store.move(moved_to, path, replace=False)
        except TargetExists:
            log.warning(
                "%r changed after it was moved to %r (a writer resumed into it?), but %r is "
                "taken by a newer file; the changed file stays in %r and is not processed",
                path,
                moved_to,
                path,
                moved_to,
            )
            return self._finish(path, known, CleanupAction.MOVE_BACK_BLOCKED)
        except FileVanished:
            return self._finish(path, known, CleanupAction.SETTLED)
        log.warning(
            "%r changed after it was moved to %r (a writer resumed into it): moved it back "
            "to be announced as a new version",
            path,
            moved_to,
        )
        suffix = self.config.done_marker_suffix
        if suffix:
            with contextlib.suppress(FileVanished, TargetExists):
                self.store.move(moved_to + suffix, path + suffix, replace=False)
        return self._finish(path, known, CleanupAction.MOVED_BACK)
