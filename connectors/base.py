"""The file-store protocol every connector implements, and the values it returns.

A store does I/O only. It lists what is there, opens files for streaming reads, performs the
clean-up moves and writes the files exports deliver; completeness detection, de-duplication and
the clean-up policy live once, in :mod:`connectors.poller`. Stores are blocking (paramiko,
boto3, the file system): callers run them in an executor, one call at a time per store instance.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One version of one regular file as the store reported it.

    ``path`` is connector-relative (see :mod:`connectors.paths`); ``mtime`` is seconds since the
    epoch (SFTP servers report whole seconds); ``etag`` is a content checksum when the store
    knows one (S3 ETag), else ``None``.
    """

    path: str
    size: int
    mtime: float
    etag: str | None = None

    @property
    def version_id(self) -> str:
        """Identify this version: equal for an unchanged file, different after a re-upload."""
        ident = f"{self.path}\x00{self.size}\x00{self.mtime:.6f}\x00{self.etag or ''}"
        return hashlib.sha256(ident.encode()).hexdigest()[:32]


class SkipReason(StrEnum):
    """Why a listed entry is never announced (a bounded metric label)."""

    SYMLINK = "symlink"
    SPECIAL_FILE = "special_file"
    UNSAFE_NAME = "unsafe_name"
    EXCLUDED = "excluded"
    TOO_YOUNG = "too_young"
    UNSTABLE = "unstable"
    AWAITING_MARKER = "awaiting_marker"
    STALE_MARKER = "stale_marker"


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """A directory entry the store will not serve, with the reason."""

    path: str
    reason: SkipReason
    detail: str = ""


WRITE_CHUNK = 1024 * 1024
"""Bytes read from the source per step of a :meth:`FileStore.write`."""


def temp_name(name: str) -> str:
    """Return the temporary name a write of ``name`` goes to before its final rename.

    Hidden (a leading dot) and marked, so listings and people can tell it from a real file; the
    name part is cut so the whole stays within the 255-byte name limit of common file systems.
    """
    short = name.encode()[:180].decode(errors="ignore")
    return f".{short}.callstream-{secrets.token_hex(8)}.part"


_TEMP_NAME = re.compile(r"\..*\.callstream-[0-9a-f]{16}\.part\Z", re.DOTALL)


def is_temp_name(name: str) -> bool:
    """Tell whether a file name is one :func:`temp_name` made (a write still in progress or
    abandoned): never announced, whatever a connector's globs say."""
    return _TEMP_NAME.match(name) is not None


Prune = Callable[[str], bool]
"""Given a connector-relative folder path, return True to not descend into it."""


class FileStore(Protocol):
    """A place files arrive: an SFTP folder, an S3 prefix, a local directory.

    Contract:

    - ``connect`` opens the session; it raises :class:`~connectors.errors.HostKeyMismatch`,
      :class:`~connectors.errors.AuthenticationFailed` or
      :class:`~connectors.errors.StoreUnavailable`. Every other method may be called only after
      it and reconnects by calling it again after a ``StoreUnavailable``.
    - ``iter_entries`` walks the whole tree under the root (depth-first, folders sorted), yields
      a ``RemoteFile`` for each regular file and a ``SkippedEntry`` for each symlink, FIFO, device
      or unsafe name. It never follows symlinks.
    - ``open`` returns a binary file object for a streaming read of a regular file, refusing
      symlinks and anything outside the root; the caller closes it.
    - ``move`` renames within the root, creating parent folders and replacing the target (with
      ``replace=False`` it raises :class:`~connectors.errors.TargetExists` instead, atomically
      where the store can); ``delete`` removes a file. Both are used only by the poller's
      clean-up.
    - ``write`` stores the bytes of ``src`` (read to its end, in chunks: never whole in memory)
      at ``path`` inside the root, creating parent folders, and returns the written version.
      It is atomic where the store can be: the bytes go to a temporary name in the same folder
      (``.<name>.callstream-<hex>.part``) that is renamed over ``path`` at the end (SFTP, local
      folder; an S3 object appears only once its upload completes), so a reader never sees a
      half-written file, and a failed write removes its temporary file. With ``replace=False``
      an existing ``path`` raises :class:`~connectors.errors.TargetExists` (atomically on the
      local folder and SFTP, a check before the upload on S3). Unsafe paths raise
      :class:`~connectors.errors.UnsafePath`; failures map to the errors of ``connect``, plus
      :class:`~connectors.errors.AccessDenied` (no write permission) and
      :class:`~connectors.errors.ConnectorError` (also for an error reading ``src``).
      Used by export deliveries.
    - Names with a control character and paths longer than
      :data:`~connectors.paths.MAX_PATH_CHARS` are listed as ``unsafe_name`` skipped entries.
    """

    description: str
    """Where this store points, for messages; never contains a secret."""

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]: ...

    def stat(self, path: str) -> RemoteFile | None: ...

    def open(self, path: str) -> BinaryIO: ...

    def move(self, src: str, dst: str, *, replace: bool = True) -> None: ...

    def delete(self, path: str) -> None: ...

    def write(self, path: str, src: BinaryIO, *, replace: bool = True) -> RemoteFile: ...
