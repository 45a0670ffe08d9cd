"""Local-folder file store: a directory on this machine (or a mounted share).

Symlinks are never followed: listings use ``lstat`` and ``open`` uses ``O_NOFOLLOW`` after
checking that the resolved path is still inside the root, so a link planted in the folder can
not expose other files.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from connectors import paths
from connectors.base import Prune, RemoteFile, SkippedEntry, SkipReason
from connectors.errors import (
    ConnectorError,
    FileVanished,
    NotARegularFile,
    StoreUnavailable,
    UnsafePath,
)


class LocalConfig(BaseModel):
    """A folder on the local file system that files arrive in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["local"] = "local"
    root: Path = Field(description="Folder files arrive in.", examples=["/var/lib/callstream/in"])
    create: bool = Field(False, description="Create the folder if it does not exist.")


class LocalStore:
    """A :class:`~connectors.base.FileStore` over a local directory."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.description = f"file://{config.root}"
        self._root = Path(config.root)

    def connect(self) -> None:
        """Check that the root folder exists (creating it when configured to)."""
        if self.config.create:
            self._root.mkdir(parents=True, exist_ok=True)
        if not self._root.is_dir():
            raise StoreUnavailable(f"folder {str(self._root)!r} does not exist")

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _full(self, path: str) -> Path:
        full = self._root / paths.normalize(path)
        real_parent = os.path.realpath(full.parent)
        real_root = os.path.realpath(self._root)
        if os.path.commonpath([real_parent, real_root]) != real_root:
            raise UnsafePath(f"{path!r} resolves outside {str(self._root)!r}")
        return full

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]:
        """Walk the tree under the root without following links (see the protocol)."""
        stack = [""]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(self._root / folder if folder else self._root) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                if folder:
                    continue
                raise StoreUnavailable(f"folder {str(self._root)!r} does not exist") from None
            except OSError as exc:
                raise StoreUnavailable(f"listing {folder or '.'!r} in {self._root}: {exc}") from exc
            subfolders = []
            for entry in entries:
                rel = f"{folder}/{entry.name}" if folder else entry.name
                if not paths.is_safe_name(entry.name):
                    yield SkippedEntry(rel, SkipReason.UNSAFE_NAME, "unsafe name")
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat_mod.S_ISLNK(st.st_mode):
                    yield SkippedEntry(rel, SkipReason.SYMLINK, "symbolic link")
                elif stat_mod.S_ISDIR(st.st_mode):
                    if prune is None or not prune(rel):
                        subfolders.append(rel)
                elif stat_mod.S_ISREG(st.st_mode):
                    yield RemoteFile(rel, st.st_size, st.st_mtime)
                else:
                    yield SkippedEntry(rel, SkipReason.SPECIAL_FILE, f"mode {st.st_mode:o}")
            stack.extend(reversed(subfolders))

    def stat(self, path: str) -> RemoteFile | None:
        """Return the current version of a regular file, or None if it is gone."""
        try:
            st = os.lstat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ConnectorError(f"stat {path!r} in {self._root}: {exc}") from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path!r} in {self._root} is not a regular file")
        return RemoteFile(paths.normalize(path), st.st_size, st.st_mtime)

    def open(self, path: str) -> BinaryIO:
        """Open a regular file for reading, refusing symlinks."""
        full = self._full(path)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            raise FileVanished(f"{path!r} is no longer in {self._root}") from exc
        except OSError as exc:  # ELOOP: the last component is a symlink
            raise NotARegularFile(f"opening {path!r} in {self._root}: {exc}") from exc
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotARegularFile(f"{path!r} in {self._root} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1024 * 1024)

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` inside the root, creating folders, replacing ``dst``."""
        source, target = self._full(src), self._full(dst)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except FileNotFoundError as exc:
            raise FileVanished(f"{src!r} is no longer in {self._root}") from exc
        except OSError as exc:
            raise ConnectorError(f"moving {src!r} to {dst!r} in {self._root}: {exc}") from exc

    def delete(self, path: str) -> None:
        """Remove a file inside the root."""
        try:
            os.unlink(self._full(path))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConnectorError(f"deleting {path!r} in {self._root}: {exc}") from exc
