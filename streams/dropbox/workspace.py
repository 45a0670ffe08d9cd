"""One account's folder as its SFTP session sees it: confinement, the layout rules, uploads.

Every call is blocking (the file system): the server runs it in a thread.

**Confinement.** The SFTP client sees the account's folder as ``/``. :meth:`Workspace.resolve`
turns a client path (absolute, or relative to ``/``) into a connector-relative path, refusing one
whose ``..`` would climb above ``/``. Every file-system call then goes through
:class:`~connectors.local.LocalStore`'s descriptor walk (``openat(O_NOFOLLOW)`` one component at a
time), so a symbolic link anywhere on a path is refused rather than followed, whoever planted it;
the server offers no way to make links.

**Layout** (:data:`~streams.control.dropbox.Layout`): files may be written only in the upload
area (``data/<file>``, ``<sources folder>/<type>/<file>``, or anywhere for ``any``); folders may
be made only where the layout has them. The connector's processed, invalid and archive folders
are readable and never writable.

**Uploads.** A file opened for writing is written to a hidden temporary name beside its target
(:func:`~connectors.base.temp_name`: never listed to the client, never announced by the poller)
and renamed over the target by :meth:`Workspace.commit` when the client closes it, so the
connector never sees a partial upload; :meth:`Workspace.discard` removes it instead.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from asyncssh import (
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPNoSuchFile,
    SFTPPermissionDenied,
)

from connectors import paths
from connectors.base import RemoteFile, is_temp_name, temp_name
from connectors.errors import ConnectorError, FileVanished, TargetExists, UnsafePath
from connectors.local import LocalConfig, LocalStore
from streams.control.dropbox import Layout

T = TypeVar("T")
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rules:
    """Where an account may write: its layout and the connector's folders."""

    layout: Layout
    sources_folder: str
    """The connector's ``ingest.sources_folder`` (``sources`` layout)."""
    read_only: tuple[str, ...]
    """The connector's processed, invalid and archive folders."""

    def upload_folders(self) -> list[str]:
        """The folders made at login so the client finds where to upload."""
        if self.layout == "data":
            return ["data"]
        if self.layout == "sources":
            return [self.sources_folder]
        return []

    def _reserved(self, rel: str) -> bool:
        return any(rel == r or rel.startswith(r + "/") for r in self.read_only)

    def may_write(self, rel: str) -> bool:
        """Tell whether a file may be written (or removed, or renamed) at ``rel``."""
        name = rel.rsplit("/", 1)[-1]
        if not rel or self._reserved(rel) or is_temp_name(name):
            return False
        if self.layout == "data":
            return paths.parent(rel) == "data"
        if self.layout == "sources":
            inside = rel.removeprefix(self.sources_folder + "/")
            return inside != rel and inside.count("/") == 1
        return True

    def may_make_folder(self, rel: str) -> bool:
        """Tell whether a folder may be made (or removed) at ``rel``."""
        if not rel or self._reserved(rel) or rel in self.read_only:
            return False
        if self.layout == "data":
            return False  # seed 003: no folders within the upload folder
        if self.layout == "sources":
            inside = rel.removeprefix(self.sources_folder + "/")
            return inside != rel and "/" not in inside
        return True


@dataclass(slots=True)
class Upload:
    """A file open for writing: its temporary file and what was written to it."""

    rel: str
    folder_fd: int
    name: str
    temp: str
    fd: int
    size: int
    """Current length of the temporary file."""
    received: int = 0
    """Bytes the client sent (counted against the daily quota)."""
    refused: str | None = None
    """Why a write was refused (quota): the upload is discarded at close."""
    closed: bool = False


@dataclass(slots=True)
class Reader:
    """A file open for reading."""

    fd: int


def _denied(message: str) -> SFTPError:
    return SFTPPermissionDenied(message)


def sftp_error(exc: BaseException, path: str) -> SFTPError:
    """Map a file-system or store error to the SFTP status a client understands."""
    shown = "/" + path
    if isinstance(exc, SFTPError):
        return exc
    if isinstance(exc, UnsafePath):
        return _denied(f"{shown}: symbolic links are not followed")
    if isinstance(exc, FileVanished | FileNotFoundError | NotADirectoryError):
        return SFTPNoSuchFile(f"{shown}: no such file or folder")
    if isinstance(exc, TargetExists | FileExistsError):
        return SFTPFileAlreadyExists(f"{shown}: already exists")
    if isinstance(exc, PermissionError):
        return _denied(f"{shown}: permission denied")
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return _denied(f"{shown}: symbolic links are not followed")
    if isinstance(exc, OSError) and exc.errno == errno.ENOTEMPTY:
        return SFTPFailure(f"{shown}: the folder is not empty")
    return SFTPFailure(f"{shown}: {exc}")


class Workspace:
    """An account's folder (see the module doc); methods raise :class:`asyncssh.SFTPError`."""

    def __init__(self, config: LocalConfig, rules: Rules) -> None:
        self.root = Path(config.root)
        self.rules = rules
        self.store = LocalStore(config)

    # -- paths ----------------------------------------------------------------------------------

    @staticmethod
    def resolve(path: bytes) -> str:
        """Return the connector-relative path ('' = the folder itself) of a client path."""
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise SFTPNoSuchFile("file names must be UTF-8") from None
        if paths.has_control_character(text):
            raise SFTPNoSuchFile("file names may not contain control characters")
        parts: list[str] = []
        for part in text.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise _denied(f"{text}: the path leaves your folder")
                parts.pop()
            else:
                parts.append(part)
        rel = "/".join(parts)
        if len(rel) > paths.MAX_PATH_CHARS:
            raise SFTPFailure(f"path longer than {paths.MAX_PATH_CHARS} characters")
        return rel

    def _call(self, rel: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (OSError, ConnectorError) as exc:
            raise sftp_error(exc, rel) from exc

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str]]:
        fd = self.store.open_folder(paths.parent(rel))
        try:
            yield fd, rel.rsplit("/", 1)[-1]
        finally:
            os.close(fd)

    def prepare(self) -> None:
        """Make the folder if its connector says so, and the layout's upload folders (at login)."""
        self._call("", self.store.connect)
        for folder in self.rules.upload_folders():
            fd = self._call(folder, functools.partial(self.store.open_folder, folder, create=True))
            os.close(fd)

    # -- reading --------------------------------------------------------------------------------

    def lstat(self, rel: str) -> os.stat_result:
        """Status of an entry, never following a link; temporary upload names do not exist."""
        if rel and is_temp_name(rel.rsplit("/", 1)[-1]):
            raise SFTPNoSuchFile(f"/{rel}: no such file or folder")

        def stat() -> os.stat_result:
            if not rel:
                fd = self.store.open_folder("")
                try:
                    return os.fstat(fd)
                finally:
                    os.close(fd)
            with self._parent(rel) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)

        return self._call(rel, stat)

    def list_folder(self, rel: str) -> list[tuple[str, os.stat_result]]:
        """Return a folder's entries with their own status, temporary uploads left out."""

        def scan() -> list[tuple[str, os.stat_result]]:
            fd = self.store.open_folder(rel)
            out = []
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        if is_temp_name(entry.name):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            out.append((entry.name, entry.stat(follow_symlinks=False)))
            finally:
                os.close(fd)
            return sorted(out)

        return self._call(rel, scan)

    def open_read(self, rel: str) -> Reader:
        """Open a regular file for reading (links refused)."""
        f = self._call(rel, lambda: self.store.open(rel))
        fd = os.dup(f.fileno())
        f.close()
        return Reader(fd)

    @staticmethod
    def read(reader: Reader, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``."""
        return os.pread(reader.fd, size, offset)

    @staticmethod
    def close_reader(reader: Reader) -> None:
        """Release a reader."""
        os.close(reader.fd)

    def usage(self) -> int:
        """Return the bytes of every regular file under the folder (temporary uploads too)."""
        total = 0
        stack = [""]
        while stack:
            folder = stack.pop()
            try:
                fd = self.store.open_folder(folder)
            except (OSError, ConnectorError):
                continue  # removed meanwhile, or a link: not ours to count
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        with contextlib.suppress(FileNotFoundError):
                            st = entry.stat(follow_symlinks=False)
                            if stat_mod.S_ISDIR(st.st_mode):
                                stack.append(f"{folder}/{entry.name}" if folder else entry.name)
                            elif stat_mod.S_ISREG(st.st_mode):
                                total += st.st_size
            finally:
                os.close(fd)
        return total

    # -- writing --------------------------------------------------------------------------------

    def _check_write(self, rel: str) -> None:
        if not self.rules.may_write(rel):
            raise _denied(f"/{rel}: {self._where()}")

    def _where(self) -> str:
        rules = self.rules
        if rules.layout == "data":
            return "files may only be uploaded into /data/"
        if rules.layout == "sources":
            return f"files may only be uploaded into /{rules.sources_folder}/<type>/"
        return f"/{', /'.join(rules.read_only)} are read-only"

    def open_write(self, rel: str, *, truncate: bool, exclusive: bool) -> Upload:
        """Start an upload to ``rel`` (a temporary file; without ``truncate``, a copy of the
        current file to write into)."""
        self._check_write(rel)

        def start() -> Upload:
            folder_fd = self.store.open_folder(paths.parent(rel))
            name = rel.rsplit("/", 1)[-1]
            temp = temp_name(name)
            fd = -1
            try:
                current = _existing(folder_fd, name)
                if current is not None and exclusive:
                    raise FileExistsError(errno.EEXIST, "exists", rel)
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(temp, flags, 0o644, dir_fd=folder_fd)
                size = 0
                if current is not None and not truncate:
                    size = _copy_into(folder_fd, name, fd)
                return Upload(rel, folder_fd, name, temp, fd, size)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=folder_fd)
                os.close(folder_fd)
                raise

        return self._call(rel, start)

    @staticmethod
    def write(upload: Upload, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of the temporary file."""
        os.pwrite(upload.fd, data, offset)
        upload.size = max(upload.size, offset + len(data))

    def commit(self, upload: Upload) -> RemoteFile:
        """Make the upload the file at its path (fsync'd, renamed into place); return it."""
        upload.closed = True

        def finish() -> RemoteFile:
            try:
                os.fsync(upload.fd)
                os.close(upload.fd)
                upload.fd = -1
                os.rename(upload.temp, upload.name, src_dir_fd=upload.folder_fd,
                          dst_dir_fd=upload.folder_fd)  # fmt: skip
                os.fsync(upload.folder_fd)
                st = os.stat(upload.name, dir_fd=upload.folder_fd, follow_symlinks=False)
                return RemoteFile(upload.rel, st.st_size, st.st_mtime)
            except BaseException:
                self._drop(upload)
                raise
            finally:
                os.close(upload.folder_fd)

        return self._call(upload.rel, finish)

    def discard(self, upload: Upload) -> None:
        """Throw an upload away (refused, or its session ended before it was closed)."""
        upload.closed = True
        try:
            self._drop(upload)
        finally:
            os.close(upload.folder_fd)

    @staticmethod
    def _drop(upload: Upload) -> None:
        if upload.fd >= 0:
            os.close(upload.fd)
            upload.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(upload.temp, dir_fd=upload.folder_fd)

    def remove(self, rel: str) -> None:
        """Delete a file of the upload area."""
        self._check_write(rel)

        def unlink() -> None:
            with self._parent(rel) as (fd, name):
                if stat_mod.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "is a folder: use rmdir", rel)
                os.unlink(name, dir_fd=fd)

        self._call(rel, unlink)

    def rename(self, old: str, new: str, *, replace: bool) -> RemoteFile:
        """Rename a file within the upload area; return the renamed file."""
        self._check_write(old)
        self._check_write(new)
        if not stat_mod.S_ISREG(self.lstat(old).st_mode):
            raise SFTPFailure(f"/{old}: only files can be renamed")
        self._call(new, lambda: self.store.move(old, new, replace=replace))
        st = self.lstat(new)
        return RemoteFile(new, st.st_size, st.st_mtime)

    def make_folder(self, rel: str) -> None:
        """Make a folder where the layout allows one."""
        if not self.rules.may_make_folder(rel):
            raise _denied(f"/{rel}: folders cannot be made here ({self._where()})")

        def mkdir() -> None:
            with self._parent(rel) as (fd, name):
                os.mkdir(name, 0o755, dir_fd=fd)

        self._call(rel, mkdir)

    def remove_folder(self, rel: str) -> None:
        """Remove an empty folder where the layout allows one."""
        if not self.rules.may_make_folder(rel):
            raise _denied(f"/{rel}: this folder cannot be removed")

        def rmdir() -> None:
            with self._parent(rel) as (fd, name):
                os.rmdir(name, dir_fd=fd)

        self._call(rel, rmdir)


def _existing(folder_fd: int, name: str) -> os.stat_result | None:
    try:
        st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat_mod.S_ISREG(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "not a regular file", name)
    return st


def _copy_into(folder_fd: int, name: str, out_fd: int) -> int:
    """Copy the current file into the temporary one (a write that keeps the old bytes)."""
    in_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    copied = 0
    try:
        while chunk := os.read(in_fd, _COPY_CHUNK):
            os.write(out_fd, chunk)
            copied += len(chunk)
    finally:
        os.close(in_fd)
    return copied
