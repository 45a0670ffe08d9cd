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

Clean-up (:meth:`Poller.cleanup`) runs only when downstream reports the file's outcome, and only
if the file on the store is still the version the outcome is about.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors import paths
from connectors.base import FileStore, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import FileVanished, NotARegularFile, UnsafePath

log = logging.getLogger(__name__)


class CleanupPolicy(StrEnum):
    """What happens to a source file once downstream has committed it."""

    KEEP = "keep"
    """Leave it where it is (it is still never announced twice)."""
    MOVE = "move"
    """Move it under ``processed/`` or ``invalid/``, keeping its relative path."""
    DELETE = "delete"
    """Delete processed files; invalid files are still moved to ``invalid/`` (never lost)."""


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


class CleanupAction(StrEnum):
    """What :meth:`Poller.cleanup` did (a bounded metric label)."""

    KEPT = "kept"
    MOVED_PROCESSED = "moved_processed"
    MOVED_INVALID = "moved_invalid"
    DELETED = "deleted"
    MISSING = "missing"
    SUPERSEDED = "superseded"


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

    @field_validator("processed_dir", "invalid_dir")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        try:
            return paths.normalize(value)
        except UnsafePath as exc:
            raise ValueError(str(exc)) from exc


@dataclass(slots=True)
class KnownFile:
    """The last announced version of a path, as recorded durably."""

    version_id: str
    version: int
    cleaned: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """A complete file version to announce, with its per-path version number (1, 2, ...)."""

    file: RemoteFile
    version: int


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

    def _prune(self, folder: str) -> bool:
        return folder in self._reserved

    def poll(self) -> PollResult:
        """List the store once and return the complete, not yet announced file versions."""
        result = PollResult()
        files: list[RemoteFile] = []
        for entry in self.store.iter_entries(self._prune):
            if isinstance(entry, SkippedEntry):
                result.skipped[entry.reason] += 1
                result.skipped_entries.append(entry)
                continue
            result.listed += 1
            files.append(entry)
        suffix = self.config.done_marker_suffix
        present = {f.path for f in files} if suffix else set()
        now = self._clock()
        observed: dict[str, tuple[int, float]] = {}
        for f in files:
            if suffix and f.path.endswith(suffix):
                continue  # a marker, never a payload
            if not self._filter(f.path):
                result.skipped[SkipReason.EXCLUDED] += 1
                continue
            known = self.known.get(f.path)
            if known is not None and not known.cleaned and known.version_id == f.version_id:
                continue  # announced already, unchanged
            if suffix:
                if f.path + suffix not in present:
                    result.skipped[SkipReason.AWAITING_MARKER] += 1
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
            result.ready.append(Candidate(f, known.version + 1 if known else 1))
        self._observed = observed
        return result

    def mark_announced(self, candidates: Iterable[Candidate]) -> None:
        """Remember versions the caller has published and recorded durably."""
        for c in candidates:
            self.known[c.file.path] = KnownFile(c.file.version_id, c.version)

    def cleanup(self, path: str, version_id: str, outcome: Outcome) -> CleanupAction:
        """Apply the clean-up policy to ``path`` if it is still the version downstream judged.

        Raises :class:`~connectors.errors.ConnectorError` subclasses from the store; the caller
        retries those later (the outcome stays unacknowledged).
        """
        path = paths.normalize(path)
        try:
            current = self.store.stat(path)
        except NotARegularFile:
            return CleanupAction.SUPERSEDED
        if current is None:
            return CleanupAction.MISSING
        if current.version_id != version_id:
            return CleanupAction.SUPERSEDED
        policy = self.config.cleanup
        if policy == CleanupPolicy.KEEP or outcome == Outcome.INCOMPLETE:
            return CleanupAction.KEPT
        if outcome in (Outcome.INVALID, Outcome.PARTIAL):
            action, folder = CleanupAction.MOVED_INVALID, self.config.invalid_dir
        elif policy == CleanupPolicy.MOVE:
            action, folder = CleanupAction.MOVED_PROCESSED, self.config.processed_dir
        else:
            action, folder = CleanupAction.DELETED, ""
        try:
            if folder:
                self.store.move(path, f"{folder}/{path}")
            else:
                self.store.delete(path)
        except FileVanished:
            return CleanupAction.MISSING
        suffix = self.config.done_marker_suffix
        if suffix:
            marker = path + suffix
            try:
                if folder:
                    self.store.move(marker, f"{folder}/{marker}")
                else:
                    self.store.delete(marker)
            except FileVanished:
                log.info("done marker %r was already gone", marker)
        known = self.known.get(path)
        if known is not None:
            known.cleaned = True
        return action
