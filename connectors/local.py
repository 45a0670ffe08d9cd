"""Local-folder file store: a directory on this machine (or a mounted share).

Symlinks are never followed, and there is no check-then-use: every operation walks from the
root one component at a time with ``openat(O_DIRECTORY | O_NOFOLLOW)`` and then acts relative to
the folder descriptor it holds (``fstatat``, ``openat(O_NOFOLLOW)``, ``renameat``, ``unlinkat``,
``linkat``). A symlinked folder planted anywhere on the path, before or during the call, makes
the call fail with :class:`~connectors.errors.UnsafePath` instead of reaching outside the root.
Listings read folders through descriptors opened the same way. The configured root itself is
trusted (operators may point it at a link).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from connectors import paths
from connectors.base import WRITE_CHUNK, Prune, RemoteFile, SkippedEntry, SkipReason, temp_name
from connectors.errors import (
    AccessDenied,
    ConnectorError,
    FileVanished,
    NotARegularFile,
    StoreUnavailable,
    TargetExists,
    UnsafePath,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


class LocalConfig(BaseModel):
    """A folder on the local file system that files arrive in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["local"] = "local"
    root: Path = Field(description="Folder files arrive in.", examples=["/var/lib/callstream/in"])
    create: bool = Field(False, description="Create the folder if it does not exist.")


class _Missing(Exception):
    """A folder on the way to a path does not exist (or is a regular file)."""


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

    # -- resolution beneath the root -----------------------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreUnavailable(f"opening folder {str(self._root)!r}: {exc}") from exc

    def _open_child(self, fd: int, name: str, rel: str, *, create: bool) -> int:
        """Open folder ``name`` beneath ``fd`` without following a link (creating it if asked)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise _Missing(rel) from None
        except NotADirectoryError:  # a link (O_NOFOLLOW) or a file where a folder should be
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat_mod.S_ISLNK(st.st_mode):
                raise UnsafePath(
                    f"{rel!r} in {self._root} is a symbolic link; links are never followed"
                ) from None
            if create:
                raise ConnectorError(f"{rel!r} in {self._root} is a file, not a folder") from None
            raise _Missing(rel) from None
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=fd)
        return self._open_child(fd, name, rel, create=False)

    def _open_folder(self, folder: str, *, create: bool = False) -> int:
        """Return a descriptor of ``folder`` ('' = the root), walked one component at a time."""
        fd = self._open_root()
        walked: list[str] = []
        try:
            for part in folder.split("/") if folder else []:
                walked.append(part)
                child = self._open_child(fd, part, "/".join(walked), create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_folder(self, folder: str, *, create: bool = False) -> int:
        """Return a descriptor of ``folder`` (a normalized connector-relative path, '' = the
        root), walked from the root one component at a time without following a link, creating
        missing folders if asked; the caller closes it. Raises :class:`FileNotFoundError` when
        a folder on the way is missing or a file, :class:`~connectors.errors.UnsafePath` for a
        link, :class:`~connectors.errors.StoreUnavailable` when the root cannot be opened."""
        try:
            return self._open_folder(folder, create=create)
        except _Missing as exc:
            raise FileNotFoundError(errno.ENOENT, "no such folder", folder) from exc

    @contextlib.contextmanager
    def _parent(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """Yield (descriptor of the folder holding ``path``, its last name)."""
        norm = paths.normalize(path)
        fd = self._open_folder(paths.parent(norm), create=create)
        try:
            yield fd, norm.rsplit("/", 1)[-1]
        finally:
            os.close(fd)

    # -- listing -------------------------------------------------------------------------------

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]:
        """Walk the tree under the root without following links (see the protocol)."""
        stack = [""]
        while stack:
            folder = stack.pop()
            try:
                listed = self._list(folder)
            except _Missing:
                continue  # removed (or replaced by a file) while we walked
            except UnsafePath:  # replaced by a link while we walked
                yield SkippedEntry(folder, SkipReason.SYMLINK, "symbolic link")
                continue
            subfolders = []
            for name, st in listed:
                rel = f"{folder}/{name}" if folder else name
                if not paths.is_safe_name(name) or len(rel) > paths.MAX_PATH_CHARS:
                    yield SkippedEntry(rel, SkipReason.UNSAFE_NAME, paths.unsafe_reason(rel))
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

    def _list(self, folder: str) -> list[tuple[str, os.stat_result]]:
        """Return a folder's entries with their own (never followed) status, sorted by name."""
        try:
            fd = self._open_folder(folder)
        except _Missing:
            if folder:
                raise
            raise StoreUnavailable(f"folder {str(self._root)!r} does not exist") from None
        except OSError as exc:
            raise StoreUnavailable(f"listing {folder or '.'!r} in {self._root}: {exc}") from exc
        out: list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    with contextlib.suppress(FileNotFoundError):  # removed since readdir
                        out.append((entry.name, entry.stat(follow_symlinks=False)))
        except OSError as exc:
            raise StoreUnavailable(f"listing {folder or '.'!r} in {self._root}: {exc}") from exc
        finally:
            os.close(fd)
        out.sort(key=lambda item: item[0])
        return out

    # -- single files --------------------------------------------------------------------------

    def stat(self, path: str) -> RemoteFile | None:
        """Return the current version of a regular file, or None if it is gone."""
        try:
            with self._parent(path) as (fd, name):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (_Missing, FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ConnectorError(f"stat {path!r} in {self._root}: {exc}") from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path!r} in {self._root} is not a regular file")
        return RemoteFile(paths.normalize(path), st.st_size, st.st_mtime)

    def open(self, path: str) -> BinaryIO:
        """Open a regular file for reading, refusing symlinks anywhere on the path."""
        try:
            with self._parent(path) as (dir_fd, name):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except (_Missing, FileNotFoundError) as exc:
            raise FileVanished(f"{path!r} is no longer in {self._root}") from exc
        except OSError as exc:  # ELOOP: the last component is a symlink
            raise NotARegularFile(f"opening {path!r} in {self._root}: {exc}") from exc
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotARegularFile(f"{path!r} in {self._root} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1024 * 1024)

    def move(self, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename ``src`` to ``dst`` inside the root, creating folders (see the protocol)."""
        try:
            with (
                self._parent(src) as (src_fd, src_name),
                self._parent(dst, create=True) as (
                    dst_fd,
                    dst_name,
                ),
            ):
                if replace:
                    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                else:
                    _move_no_replace(src_fd, src_name, dst_fd, dst_name)
        except (_Missing, FileNotFoundError) as exc:
            raise FileVanished(f"{src!r} is no longer in {self._root}") from exc
        except FileExistsError as exc:
            raise TargetExists(f"{dst!r} already exists in {self._root}") from exc
        except ConnectorError:
            raise
        except OSError as exc:
            raise ConnectorError(f"moving {src!r} to {dst!r} in {self._root}: {exc}") from exc

    def write(self, path: str, src: BinaryIO, *, replace: bool = True) -> RemoteFile:
        """Store ``src`` at ``path``: a temporary file in the same folder, fsync'd, then
        renamed over ``path`` (see the protocol)."""
        norm = paths.normalize(path)
        try:
            with self._parent(norm, create=True) as (fd, name):
                tmp = temp_name(name)
                _write_temp(fd, tmp, src)
                try:
                    if replace:
                        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    else:
                        _move_no_replace(fd, tmp, fd, name)
                    os.fsync(fd)  # the rename itself survives a crash
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=fd)
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except _Missing as exc:  # a folder on the way is a file
            raise ConnectorError(f"writing {path!r} in {self._root}: {exc} is a file") from exc
        except FileExistsError as exc:
            raise TargetExists(f"{path!r} already exists in {self._root}") from exc
        except PermissionError as exc:
            raise AccessDenied(f"writing {path!r} in {self._root}: {exc}") from exc
        except ConnectorError:
            raise
        except OSError as exc:
            raise ConnectorError(f"writing {path!r} in {self._root}: {exc}") from exc
        return RemoteFile(norm, st.st_size, st.st_mtime)

    def delete(self, path: str) -> None:
        """Remove a file inside the root."""
        try:
            with self._parent(path) as (fd, name):
                os.unlink(name, dir_fd=fd)
        except (_Missing, FileNotFoundError):
            return
        except OSError as exc:
            raise ConnectorError(f"deleting {path!r} in {self._root}: {exc}") from exc


def _write_temp(dir_fd: int, tmp: str, src: BinaryIO) -> None:
    """Copy ``src`` into a new file ``tmp`` beneath ``dir_fd`` and fsync it; on any failure
    the temporary file is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            while chunk := src.read(WRITE_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _move_no_replace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename without replacing: link then unlink (atomic), or check-then-rename without links."""
    try:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        try:  # a file system without hard links: as OpenSSH's sftp-server does, racy
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        raise FileExistsError(errno.EEXIST, "target exists", dst) from exc
    os.unlink(src, dir_fd=src_fd)
