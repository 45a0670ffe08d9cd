"""SFTP file store (paramiko), with the server's host key pinned.

The host key is compared with the pinned one before any credential is sent: an unknown or
changed key raises :class:`~connectors.errors.HostKeyMismatch` whose message shows the SHA256
fingerprint the server presented, so an operator can check it out of band and pin it. There is no
trust-on-first-use: with ``host_key`` empty (not known yet) every connection is refused that way.
A store built with an :class:`~connectors.netguard.AddressGuard` (connectors created through
the API) connects its socket to an address the guard checked and hands that socket to paramiko.
Listings use ``lstat`` semantics (OpenSSH's ``readdir`` reports the link itself), so symlinks,
FIFOs and devices are reported as skipped entries and never followed.
Every wait is bounded: the handshake by ``connect_timeout_seconds`` (a watchdog closes the
transport, so no paramiko phase can hang), every reply afterwards by ``operation_timeout_seconds``
(the channel timeout); a timed-out session is closed and the call raises
:class:`~connectors.errors.StoreUnavailable`. SSH keepalives keep idle sessions through NATs.
Reads are pipelined: requests of the size the server advertises (``limits@openssh.com``, 255 KiB
on OpenSSH, else 32 KiB) are kept in flight up to :attr:`SftpConfig.read_window_bytes`, in order,
from the reading thread. Two paramiko costs are avoided (measured in
``tests/benchmarks/test_sftp_bench.py``): its channel buffer copies everything buffered on each
read (ours is a bytearray), and its CTR+HMAC ciphers cost more than AES-GCM, which is preferred.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import posixpath
import socket
import stat as stat_mod
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Self

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from paramiko.message import Message
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, int64
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors import paths
from connectors.base import WRITE_CHUNK, Prune, RemoteFile, SkippedEntry, SkipReason, temp_name
from connectors.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConnectorError,
    FileVanished,
    HostKeyMismatch,
    NotARegularFile,
    StoreUnavailable,
    TargetExists,
)

if TYPE_CHECKING:
    from connectors.netguard import AddressGuard

log = logging.getLogger(__name__)

_CHUNK = 32768  # the read size every SFTP server must serve; larger if it says so
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class SftpConfig(BaseModel):
    """Connection to one SFTP account and the folder files arrive in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["sftp"] = "sftp"
    host: str = Field(description="Server name or address.", examples=["sftp.example.com"])
    port: int = Field(22, ge=1, le=65535, description="TCP port.")
    username: str = Field(description="Account name.", examples=["acme-upload"])
    password: SecretStr | None = Field(None, description="Password (or use a private key).")
    private_key: SecretStr | None = Field(
        None, description="OpenSSH/PEM private key text (or use private_key_path)."
    )
    private_key_path: Path | None = Field(None, description="File holding the private key.")
    private_key_passphrase: SecretStr | None = Field(None, description="Passphrase of the key.")
    host_key: str = Field(
        description=(
            "Pinned server host key: a public key line ('ssh-ed25519 AAAA...') or its "
            "fingerprint ('SHA256:...'). Unknown or changed keys are refused. '' while it is "
            "not known yet: connections are refused, and the error and test connection show "
            "the key the server presents, to check with its operator and pin."
        ),
        examples=["SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ", ""],
    )
    root: str = Field("/", description="Remote folder files arrive in.", examples=["/upload"])
    connect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Limit for the TCP connection, and for the whole SSH handshake after it "
        "(banner, key exchange, authentication, starting SFTP).",
    )
    keepalive_seconds: float = Field(
        15.0,
        ge=0,
        description="Send an SSH keepalive after this much idle time, so NATs and firewalls "
        "keep the session open (0: never).",
    )
    operation_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest wait for any reply from the server (a listing, a stat, a read); "
        "a half-open link then fails with 'store unavailable' and the session is reopened.",
    )
    read_window_bytes: int = Field(
        4 * 1024 * 1024,
        ge=_CHUNK,
        le=32 * 1024 * 1024,
        description="Bytes requested ahead per open file (bounds memory per read).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        has_key = self.private_key is not None or self.private_key_path is not None
        if (self.password is None) == (not has_key):
            raise ValueError("set exactly one of password, private_key or private_key_path")
        if self.private_key is not None and self.private_key_path is not None:
            raise ValueError("set private_key or private_key_path, not both")
        return self

    @field_validator("host_key")
    @classmethod
    def _blank_is_unpinned(cls, value: str) -> str:
        return value if value.strip() else ""

    @model_validator(mode="after")
    def _pinned_key_shape(self) -> Self:
        if self.host_key:
            fingerprint_of_pin(self.host_key)
        return self


def fingerprint(key: paramiko.PKey) -> str:
    """Return the OpenSSH-style SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint_of_pin(pin: str) -> str:
    """Return the fingerprint a pinned ``host_key`` value stands for, or raise ValueError."""
    pin = pin.strip()
    if pin.startswith("SHA256:"):
        b64 = pin[len("SHA256:") :].rstrip("=")
        try:
            digest = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ValueError("host_key fingerprint must be 'SHA256:' + 43 base64 characters")
        return "SHA256:" + b64
    parts = pin.split()
    if len(parts) >= 2:
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except ValueError as exc:
            raise ValueError(f"host_key is not a valid public key line: {exc}") from exc
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    raise ValueError("host_key must be 'ssh-<type> <base64>' or 'SHA256:<fingerprint>'")


def public_key_line(key: paramiko.PKey) -> str:
    """Return a public key as the OpenSSH line ``host_key`` accepts ('ssh-ed25519 AAAA...')."""
    return f"{key.get_name()} {key.get_base64()}"


def new_transport(sock: socket.socket, timeout: float) -> paramiko.Transport:
    """Wrap a connected socket in a client transport: AES-GCM preferred, phases bounded."""
    transport = paramiko.Transport(
        sock, default_window_size=64 * 1024 * 1024, default_max_packet_size=256 * 1024
    )
    transport.banner_timeout = transport.handshake_timeout = timeout
    transport.auth_timeout = transport.channel_timeout = timeout
    opts = transport.get_security_options()
    opts.ciphers = tuple(c for c in _GCM if c in opts.ciphers) + tuple(
        c for c in opts.ciphers if c not in _GCM
    )
    return transport


def check_host_key(transport: paramiko.Transport, config: SftpConfig, where: str) -> paramiko.PKey:
    """Return the server's key if it is the pinned one, else raise HostKeyMismatch."""
    key = transport.get_remote_server_key()
    seen = fingerprint(key)
    line = public_key_line(key)
    if not config.host_key:
        raise HostKeyMismatch(
            f"{where} presents the host key {key.get_name()} {seen}, and the connector pins "
            f"none yet; refusing to connect. Verify {seen} with the server's operator, then set "
            f"host_key to it or to the key line {line!r}.",
            fingerprint=seen,
            public_key=line,
        )
    pinned = fingerprint_of_pin(config.host_key)
    if seen != pinned:
        raise HostKeyMismatch(
            f"host key of {where} is {key.get_name()} {seen}, but the connector pins "
            f"{pinned}; refusing to connect. If the server's key changed on purpose, "
            f"verify {seen} with its operator and set host_key to it.",
            fingerprint=seen,
            public_key=line,
        )
    return key


def authenticate(transport: paramiko.Transport, config: SftpConfig, where: str) -> None:
    """Log in with the configured password or private key; raise AuthenticationFailed."""
    try:
        if config.password is not None:
            transport.auth_password(config.username, config.password.get_secret_value())
        else:
            transport.auth_publickey(config.username, _load_private_key(config))
    except paramiko.AuthenticationException as exc:
        method = "password" if config.password is not None else "private key"
        raise AuthenticationFailed(
            f"{where} rejected {method} authentication for user {config.username!r}: {exc}"
        ) from exc


def _load_private_key(config: SftpConfig) -> paramiko.PKey:
    passphrase = (
        config.private_key_passphrase.get_secret_value() if config.private_key_passphrase else None
    )
    try:
        if config.private_key_path is not None:
            return paramiko.PKey.from_path(config.private_key_path, password=passphrase)
        assert config.private_key is not None  # noqa: S101 - guaranteed by the validator
        data = config.private_key.get_secret_value().encode()
        return _pkey_from_bytes(data, passphrase)
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise AuthenticationFailed(f"loading the private key for {config.username}: {exc}") from exc


def _pkey_from_bytes(data: bytes, passphrase: str | None) -> paramiko.PKey:
    errors: list[str] = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(data.decode()), password=passphrase)
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise ValueError("unsupported private key (" + "; ".join(errors) + ")")


class SftpStore:
    """A :class:`~connectors.base.FileStore` over one SFTP session."""

    def __init__(self, config: SftpConfig, guard: AddressGuard | None = None) -> None:
        self.config = config
        self.guard = guard
        self.description = f"sftp://{config.username}@{config.host}:{config.port}{config.root}"
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._read_size = _CHUNK

    # -- session -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open (or re-open) the session, verifying the pinned host key first.

        With a guard, the TCP connection goes to an address the guard checked
        (:class:`~connectors.errors.AddressRefused` otherwise, before any connection).
        """
        with self._lock:
            self.close()
            cfg = self.config
            where = f"{cfg.host}:{cfg.port}"
            limit = cfg.connect_timeout_seconds
            try:
                if self.guard is not None:
                    sock = self.guard.connect(cfg.host, cfg.port, limit)
                else:
                    sock = socket.create_connection((cfg.host, cfg.port), limit)
            except OSError as exc:
                raise StoreUnavailable(f"connecting to {where}: {exc}") from exc
            transport = new_transport(sock, limit)
            fired = threading.Event()

            def give_up() -> None:  # unblocks whichever handshake phase is waiting
                fired.set()
                transport.close()

            watchdog = threading.Timer(limit, give_up)
            watchdog.daemon = True
            watchdog.start()
            try:
                transport.start_client(timeout=limit)
                check_host_key(transport, cfg, where)
                authenticate(transport, cfg, where)
                sftp = open_sftp(transport, limit, cfg.operation_timeout_seconds)
                self._read_size = negotiated_read_length(sftp)
            except (paramiko.SSHException, OSError, EOFError, ConnectorError) as exc:
                watchdog.cancel()
                transport.close()
                if fired.is_set() and not isinstance(exc, HostKeyMismatch):
                    raise StoreUnavailable(
                        f"SSH handshake with {where} timed out after {limit:g}s"
                    ) from exc
                if isinstance(exc, ConnectorError):
                    raise
                raise StoreUnavailable(f"SSH handshake with {where}: {exc}") from exc
            watchdog.cancel()
            if cfg.keepalive_seconds:
                transport.set_keepalive(max(1, round(cfg.keepalive_seconds)))
            self._transport, self._sftp = transport, sftp

    def close(self) -> None:
        """Close the session; safe to call at any time."""
        with self._lock:
            # The transport first: on a half-open link a polite SFTP close could block forever
            # on a full send buffer; once the transport is closed it returns at once.
            if self._transport is not None:
                self._transport.close()
            if self._sftp is not None:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    self._sftp.close()
            self._sftp = self._transport = None

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._transport is None or not self._transport.is_active():
            raise StoreUnavailable(f"no open session to {self.description}")
        return self._sftp

    def _remote(self, path: str) -> str:
        return paths.join(self.config.root, path)

    # -- listing -------------------------------------------------------------------------------

    def iter_entries(self, prune: Prune | None = None) -> Iterator[RemoteFile | SkippedEntry]:
        """Walk the tree under the root without following links (see the protocol)."""
        with self._lock:
            sftp = self._client()
            stack = [""]
            while stack:
                folder = stack.pop()
                remote = self._remote(folder) if folder else self.config.root
                try:
                    attrs = sftp.listdir_attr(remote)
                except FileNotFoundError:
                    if folder:  # removed while we walked: nothing to list
                        continue
                    raise StoreUnavailable(f"listing {remote!r}: folder does not exist") from None
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    where = self.description
                    raise StoreUnavailable(f"listing {remote!r} on {where}: {exc}") from exc
                subfolders = []
                for attr in sorted(attrs, key=lambda a: a.filename):
                    name = attr.filename
                    if name in (".", ".."):
                        continue
                    rel = f"{folder}/{name}" if folder else name
                    if not paths.is_safe_name(name) or len(rel) > paths.MAX_PATH_CHARS:
                        yield SkippedEntry(rel, SkipReason.UNSAFE_NAME, paths.unsafe_reason(rel))
                        continue
                    mode = attr.st_mode or 0
                    if stat_mod.S_ISLNK(mode):
                        yield SkippedEntry(rel, SkipReason.SYMLINK, "symbolic link")
                    elif stat_mod.S_ISDIR(mode):
                        if prune is None or not prune(rel):
                            subfolders.append(rel)
                    elif stat_mod.S_ISREG(mode):
                        yield RemoteFile(rel, attr.st_size or 0, float(attr.st_mtime or 0))
                    else:
                        yield SkippedEntry(rel, SkipReason.SPECIAL_FILE, f"mode {mode:o}")
                stack.extend(reversed(subfolders))

    def stat(self, path: str) -> RemoteFile | None:
        """Return the current version of a regular file, or None if it is gone."""
        with self._lock:
            try:
                attr = self._client().lstat(self._remote(path))
            except FileNotFoundError:
                return None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise StoreUnavailable(f"stat {path!r} on {self.description}: {exc}") from exc
            if not stat_mod.S_ISREG(attr.st_mode or 0):
                raise NotARegularFile(f"{path!r} on {self.description} is not a regular file")
            return RemoteFile(paths.normalize(path), attr.st_size or 0, float(attr.st_mtime or 0))

    # -- data ----------------------------------------------------------------------------------

    def open(self, path: str) -> BinaryIO:
        """Open a regular file for a pipelined, bounded-memory streaming read."""
        with self._lock:
            current = self.stat(path)
            if current is None:
                raise FileVanished(f"{path!r} is no longer on {self.description}")
            try:
                handle = self._client().open(self._remote(path), "rb")
            except FileNotFoundError as exc:
                raise FileVanished(f"{path!r} is no longer on {self.description}") from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise StoreUnavailable(f"opening {path!r} on {self.description}: {exc}") from exc
            depth = max(1, self.config.read_window_bytes // self._read_size)
            reader = _PipelinedReader(
                self._client(), handle, current.size, self._read_size, depth, self._broken
            )
            return io.BufferedReader(reader, buffer_size=1024 * 1024)

    def _broken(self, what: str, exc: BaseException) -> StoreUnavailable:
        """Close a session that failed mid-conversation; return the error to raise."""
        self.close()
        return StoreUnavailable(f"{what} on {self.description}: {exc or type(exc).__name__}")

    # -- clean-up ------------------------------------------------------------------------------

    def move(self, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename ``src`` to ``dst`` inside the root, creating folders (see the protocol).

        ``replace=False`` uses the plain SFTP rename, which servers refuse when the target
        exists (OpenSSH links then unlinks: atomic).
        """
        with self._lock:
            sftp = self._client()
            target = self._remote(dst)
            what = f"moving {src!r} to {dst!r} on {self.description}"
            try:
                self._makedirs(posixpath.dirname(target))
                if replace:
                    sftp.posix_rename(self._remote(src), target)
                else:
                    sftp.rename(self._remote(src), target)
            except FileNotFoundError as exc:
                raise FileVanished(f"{src!r} is no longer on {self.description}") from exc
            except OSError as exc:
                if self._refused(exc) and not replace and self._exists(target):
                    raise TargetExists(f"{dst!r} already exists on {self.description}") from exc
                raise self._failure(what, exc) from exc
            except (EOFError, paramiko.SSHException) as exc:
                raise StoreUnavailable(f"{what}: {exc}") from exc

    def _refused(self, exc: OSError) -> bool:
        """Tell whether the server answered with an error status (the session itself works)."""
        if isinstance(exc, TimeoutError | ConnectionError):
            return False
        return self._transport is not None and self._transport.is_active()

    def _failure(self, what: str, exc: OSError) -> ConnectorError:
        """A refusal (permission denied, ...) is about this file; anything else about the link."""
        if self._refused(exc):
            return ConnectorError(f"{what}: {exc}")
        return StoreUnavailable(f"{what}: {exc}")

    def _exists(self, remote: str) -> bool:
        try:
            self._client().lstat(remote)
        except FileNotFoundError:
            return False
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise StoreUnavailable(f"stat {remote!r} on {self.description}: {exc}") from exc
        return True

    def delete(self, path: str) -> None:
        """Remove a file inside the root."""
        with self._lock:
            try:
                self._client().remove(self._remote(path))
            except FileNotFoundError:
                return
            except OSError as exc:
                raise self._failure(f"deleting {path!r} on {self.description}", exc) from exc
            except (EOFError, paramiko.SSHException) as exc:
                raise StoreUnavailable(f"deleting {path!r}: {exc}") from exc

    def write(self, path: str, src: BinaryIO, *, replace: bool = True) -> RemoteFile:
        """Upload ``src`` to a temporary name beside ``path`` (pipelined writes), then rename
        it over ``path``: ``posix-rename@openssh.com`` replaces atomically, the plain rename
        (``replace=False``) refuses a taken target (see the protocol)."""
        norm = paths.normalize(path)
        with self._lock:
            sftp = self._client()
            target = self._remote(norm)
            folder = posixpath.dirname(target)
            tmp = posixpath.join(folder, temp_name(posixpath.basename(target)))
            what = f"writing {norm!r} on {self.description}"
            renaming = False
            try:
                self._makedirs(folder)
                with sftp.open(tmp, "wbx") as out:
                    out.set_pipelined(True)
                    while chunk := src.read(WRITE_CHUNK):
                        out.write(chunk)
                renaming = True
                if replace:
                    sftp.posix_rename(tmp, target)
                else:
                    sftp.rename(tmp, target)
                attr = sftp.lstat(target)
            except OSError as exc:
                self._discard(tmp)
                refused = renaming and self._refused(exc)
                if refused and not replace and self._exists(target):
                    raise TargetExists(f"{norm!r} already exists on {self.description}") from exc
                if isinstance(exc, PermissionError):
                    raise AccessDenied(f"{what}: permission denied") from exc
                if isinstance(exc, FileNotFoundError):
                    raise ConnectorError(f"{what}: folder {folder!r} does not exist") from exc
                raise self._failure(what, exc) from exc
            except (EOFError, paramiko.SSHException) as exc:
                self._discard(tmp)
                raise StoreUnavailable(f"{what}: {exc}") from exc
            except BaseException:
                self._discard(tmp)
                raise
            return RemoteFile(norm, attr.st_size or 0, float(attr.st_mtime or 0))

    def _discard(self, remote: str) -> None:
        """Remove a temporary file after a failed write, if the session still works."""
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._sftp.remove(remote)

    def _makedirs(self, remote_dir: str) -> None:
        sftp = self._client()
        missing: list[str] = []
        current = remote_dir
        while current not in ("", "/", self.config.root.rstrip("/")):
            try:
                sftp.stat(current)
                break
            except FileNotFoundError:
                missing.append(current)
                current = posixpath.dirname(current)
        for folder in reversed(missing):
            with contextlib.suppress(OSError):  # created concurrently: the rename reports the rest
                sftp.mkdir(folder)


def open_sftp(
    transport: paramiko.Transport, open_timeout: float, reply_timeout: float
) -> paramiko.SFTPClient:
    """Open the sftp subsystem on a channel whose receive buffer is a :class:`_ByteArrayPipe`.

    Every later wait for a reply on the channel is bounded by ``reply_timeout``.
    """
    channel = transport.open_session(timeout=open_timeout)
    channel.in_buffer = _ByteArrayPipe()  # before any data can arrive
    channel.settimeout(reply_timeout)
    channel.invoke_subsystem("sftp")
    return paramiko.SFTPClient(channel)


class _ByteArrayPipe(BufferedPipe):  # type: ignore[type-arg]
    """paramiko's channel buffer on a bytearray instead of ``array.array('B')``.

    ``BufferedPipe.read`` consumes with ``del self._buffer[:n]``: on an array that copies
    everything still buffered, on a bytearray it is O(1). With megabytes in flight the array
    version made every read slower until reads collapsed to a few MB/s.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer += data

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return bytes(self._buffer[:limit])


def negotiated_read_length(sftp: paramiko.SFTPClient, default: int = _CHUNK) -> int:
    """Return the server's largest SSH_FXP_READ (``limits@openssh.com``, OpenSSH >= 8.7)."""
    client: Any = sftp  # paramiko's request API is not in its type stubs
    try:
        kind, msg = client._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, EOFError):  # SSH_FX_OP_UNSUPPORTED: another server, or an older one
        return default
    if kind != CMD_EXTENDED_REPLY or msg is None:
        return default
    _packet, max_read, _write, _handles = (msg.get_int64() for _ in range(4))
    return min(int(max_read), 1024 * 1024) or default


class _ReadPipeline:
    """In-order SSH_FXP_READs of ``request`` bytes over [0, end), ``depth`` in flight.

    No offset-keyed buffer scanned on every read (paramiko's prefetch/readv), no thread:
    replies are pumped from the reading thread. A short read is re-requested for the rest.
    Uses paramiko's request API (``_async_request``/``_read_response``), pinned to 5.1.
    """

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        handle: Any,
        end: int,
        request: int,
        depth: int,
        broken: Callable[[str, BaseException], StoreUnavailable],
    ) -> None:
        self._sftp: Any = sftp  # paramiko's request API is not in its type stubs
        self._broken = broken
        self._handle = handle
        self._next = 0
        self._end = end
        self._request = request
        self._depth = max(1, depth)
        self._inflight: deque[tuple[int, int, int]] = deque()
        self._replies: dict[int, bytes | BaseException] = {}

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        """Called by paramiko for the replies to our requests."""
        if kind == CMD_DATA:
            self._replies[num] = msg.get_string()
            return
        if kind == CMD_STATUS:
            try:
                self._sftp._convert_status(msg)
            except (OSError, EOFError) as exc:
                self._replies[num] = exc
                return
        self._replies[num] = OSError(f"unexpected SFTP reply {kind} to a read")

    def _send(self, offset: int, length: int, *, front: bool = False) -> None:
        num = self._sftp._async_request(self, CMD_READ, self._handle, int64(offset), int(length))
        (self._inflight.appendleft if front else self._inflight.append)((num, offset, length))

    def _wait(self, num: int) -> bytes | BaseException:
        while num not in self._replies:
            self._sftp._read_response()
        return self._replies.pop(num)

    def next_block(self) -> bytes | None:
        """Return the next bytes in order, or None at the end.

        A session failure (no reply within the channel timeout, the connection dropped) closes
        the session and raises :class:`~connectors.errors.StoreUnavailable`.
        """
        try:
            while len(self._inflight) < self._depth and self._next < self._end:
                length = min(self._request, self._end - self._next)
                self._send(self._next, length)
                self._next += length
            if not self._inflight:
                return None
            num, offset, length = self._inflight.popleft()
            reply = self._wait(num)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._inflight.clear()  # the session is gone: nothing left to drain
            raise self._broken(f"reading at offset {self._next}", exc) from exc
        if isinstance(reply, EOFError):
            raise FileVanished(f"file ended at {offset}, before its listed size {self._end}")
        if isinstance(reply, BaseException):
            raise StoreUnavailable(f"reading at offset {offset}: {reply}") from reply
        if not reply:
            raise FileVanished(f"empty read at offset {offset}: the file shrank")
        if len(reply) < length:
            try:
                self._send(offset + len(reply), length - len(reply), front=True)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._inflight.clear()
                raise self._broken(f"reading at offset {offset}", exc) from exc
        return reply

    def drain(self) -> None:
        """Collect outstanding replies so none are left on the session."""
        while self._inflight:
            self._wait(self._inflight.popleft()[0])


class _PipelinedReader(io.RawIOBase):
    """A sequential reader over :class:`_ReadPipeline`; bytes in flight are bounded."""

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        handle: paramiko.SFTPFile,
        size: int,
        request: int,
        depth: int,
        broken: Callable[[str, BaseException], StoreUnavailable],
    ) -> None:
        self._handle = handle
        self._pipeline = _ReadPipeline(sftp, handle.handle, size, request, depth, broken)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            block = self._pipeline.next_block()
            if block is None:
                return 0
            self._pending = memoryview(block)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException, ConnectorError):
                self._pipeline.drain()
                self._handle.close()
        super().close()
