"""The hosted SFTP drop box: an asyncssh server in the service process (``dropbox.enabled``).

**Login.** A connection logs in as a drop-box account (:mod:`streams.control.dropbox`) with its
password or one of its public keys. It is refused, whatever the credential, when the account is
unknown or disabled, its tenant is disabled, its connector is gone or not a local one, or the
peer address is outside the account's ``allow_from``. Only the SFTP subsystem is offered: no
shell, exec, scp, forwarding or agent.

**Session.** The client sees the account's folder (its connector's store root) as ``/``, under
the confinement and layout rules of :class:`~streams.dropbox.workspace.Workspace`. Symbolic and
hard links cannot be made.

**Quotas**, checked on every write: the bytes in the folder (counted when an upload starts,
plus what uploads write since) against the workspace quota, and the bytes uploaded today (UTC;
the database's total plus the uploads still open) against the daily quota. A write that would
exceed either fails with SFTP status FAILURE "quota exceeded: ..."; the upload is then
discarded at close (its close fails too), so the partial file never appears.

**Announcement.** When the client closes an upload, the file is renamed into place and the
connector runner is woken with that version marked complete
(:meth:`~streams.runner.ConnectorRunner.wake`): it is announced on the file-arrivals topic by
the connector's next cycle, at once, without the age and stability wait, and exactly once per
version by the connector's ledger. A rename into place by the client (upload to ``x.part``,
then rename to ``x``) counts the same. An upload whose session ends before it was closed is
discarded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import RemoteFile
from connectors.local import LocalConfig
from streams.control import dropbox as accounts
from streams.control.errors import NotFoundError
from streams.control.secrets import SecretBox, SecretsError
from streams.control.tenants import tenants
from streams.dropbox.workspace import Reader, Rules, Upload, Workspace
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Wake = Callable[[str, str, RemoteFile], bool]
"""(tenant, connector name, completed version) -> whether the connector runs here."""

_ACCOUNT = "callstream_dropbox_account"


@dataclass
class Account:
    """A logged-in account, with what its session needs."""

    id: str
    tenant: str
    username: str
    connector: str
    workspace: Workspace
    workspace_quota: int
    daily_quota: int


@dataclass
class Meter:
    """An account's usage as its sessions write (shared by its concurrent sessions)."""

    folder_bytes: int = 0
    day: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    recorded_today: int = 0
    """Bytes uploaded today according to the database (as of the last upload's start)."""
    pending: int = 0
    """Bytes received by uploads still open (not yet in the database)."""


def _peer_address(
    conn: asyncssh.SSHServerConnection,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(conn.get_extra_info("peername")[0].split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the host key, generating an Ed25519 one (mode 0600) the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="callstream-dropbox")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        log.info("drop box: generated a host key in %s", path)
    return asyncssh.read_private_key(str(path))


class DropboxServer:
    """Serves every drop-box account (see the module doc); ``start()``/``stop()``."""

    def __init__(self, settings: Settings, engine: AsyncEngine, box: SecretBox, wake: Wake) -> None:
        self.settings = settings
        self.engine = engine
        self.box = box
        self.wake = wake
        self.port = 0
        self.host_key_line = ""
        self._server: asyncssh.SSHAcceptor | None = None
        self._meters: dict[str, Meter] = {}

    async def start(self) -> None:
        """Listen on ``dropbox.host``/``dropbox.port``; log the host key's fingerprint."""
        cfg = self.settings.dropbox
        key = await asyncio.to_thread(load_host_key, self.settings.dropbox_host_key)
        self.host_key_line = " ".join(key.export_public_key("openssh").decode().split()[:2])
        self._server = await asyncssh.create_server(
            functools.partial(_Login, self),
            cfg.host,
            cfg.port,
            server_host_keys=[key],
            sftp_factory=functools.partial(_Session, self),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=cfg.login_timeout_seconds,
            kbdint_auth=False,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "drop box: SFTP on %s:%d, host key %s",
            cfg.host,
            self.port,
            key.get_fingerprint("sha256"),
        )

    async def stop(self) -> None:
        """Stop listening and close every session (open uploads are discarded)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- accounts -------------------------------------------------------------------------------

    async def account(self, username: str, peer: Any) -> tuple[Any, Account] | None:
        """Return the row and session of an account that may log in from ``peer``, or None."""
        async with self.engine.connect() as conn:
            row = await accounts.by_username(conn, username)
            if row is None or not row.enabled:
                return None
            status = await conn.scalar(select(tenants.c.status).where(tenants.c.id == row.tenant))
        if status is not None and status != "active":
            return None
        if not any(peer in ipaddress.ip_network(n) for n in json.loads(row.allow_from)):
            log.warning(
                "drop box: %r may not log in from %s (not in its allow_from)", username, peer
            )
            return None
        try:
            conn_settings = await accounts.local_connector(
                self.engine, self.box, self.settings, row.tenant, row.connector_id
            )
        except (NotFoundError, ValidationError, SecretsError) as exc:
            log.error("drop box: %r cannot log in: its connector: %s", username, exc)
            return None
        store = conn_settings.store
        assert isinstance(store, LocalConfig)  # noqa: S101 - local_connector checked it
        poll = conn_settings.poll
        rules = Rules(
            layout=row.layout,
            sources_folder=conn_settings.ingest.sources_folder or "sources",
            read_only=(poll.processed_dir, poll.invalid_dir, conn_settings.retention.archive_dir),
        )
        workspace = Workspace(store, rules)
        try:
            await asyncio.to_thread(workspace.prepare)
        except asyncssh.SFTPError as exc:
            log.error("drop box: %r cannot log in: preparing its folder: %s", username, exc)
            return None
        dropbox = self.settings.dropbox
        return row, Account(
            id=row.id,
            tenant=row.tenant,
            username=username,
            connector=conn_settings.name,
            workspace=workspace,
            workspace_quota=row.workspace_quota_bytes or dropbox.workspace_quota_bytes,
            daily_quota=row.daily_quota_bytes or dropbox.daily_quota_bytes,
        )

    def meter(self, account: Account) -> Meter:
        """The usage meter of an account."""
        return self._meters.setdefault(account.id, Meter())

    async def recount(self, account: Account) -> Meter:
        """Refresh an account's meter from the folder and the database (an upload starts)."""
        meter = self.meter(account)
        meter.folder_bytes = await asyncio.to_thread(account.workspace.usage)
        today = dt.datetime.now(dt.UTC).date()
        async with self.engine.connect() as conn:
            recorded = await accounts.uploaded_on(conn, account.id, today)
        if today != meter.day:
            meter.day = today
        meter.recorded_today = recorded
        return meter

    async def uploaded(self, account: Account, upload: Upload) -> None:
        """Record an upload's bytes in the account's daily total (at its close)."""
        meter = self.meter(account)
        meter.pending -= upload.received
        meter.recorded_today += upload.received
        await accounts.add_upload(self.engine, account.id, meter.day, upload.received)


class _Login(asyncssh.SSHServer):
    """One connection's login (see the module doc)."""

    def __init__(self, server: DropboxServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return True  # every login needs a credential

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def _allowed(self, username: str) -> tuple[Any, Account] | None:
        assert self.conn is not None  # noqa: S101 - set by connection_made
        return await self.server.account(username, _peer_address(self.conn))

    def _logged_in(self, account: Account) -> bool:
        assert self.conn is not None  # noqa: S101 - set by connection_made
        self.conn.set_extra_info(**{_ACCOUNT: account})
        log.info(
            "drop box: %r (%s/%s) logged in from %s",
            account.username,
            account.tenant,
            account.connector,
            _peer_address(self.conn),
        )
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        found = await self._allowed(username)
        stored = found[0].password_hash if found is not None else None
        ok = await asyncio.to_thread(accounts.check_password, password, stored)
        return found is not None and ok and self._logged_in(found[1])

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        found = await self._allowed(username)
        if found is None:
            return False
        keys = [asyncssh.import_public_key(k) for k in json.loads(found[0].public_keys)]
        if not any(k.public_data == key.public_data for k in keys):
            return False
        return self._logged_in(found[1])


class _Session(asyncssh.SFTPServer):
    """One SFTP session of a logged-in account (see the module doc)."""

    def __init__(self, server: DropboxServer, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan)
        self.server = server
        account = chan.get_connection().get_extra_info(_ACCOUNT)
        if not isinstance(account, Account):
            raise asyncssh.SFTPPermissionDenied("not logged in as a drop-box account")
        self.account = account
        self.ws = account.workspace

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _session_ending(self) -> bool:
        """Whether the client went away (a close now is the session's clean-up, not the
        client's: the upload is incomplete)."""
        chan = self.channel
        return (
            chan.is_closing()
            or self.connection.is_closed()
            or getattr(chan, "_recv_state", "open") != "open"
        )

    # -- attributes and listings ----------------------------------------------------------------

    def map_path(self, path: bytes) -> bytes:
        return path  # never used: every operation resolves through the workspace

    async def realpath(self, path: bytes) -> bytes:
        return ("/" + Workspace.resolve(path)).encode()

    async def lstat(self, path: bytes) -> os.stat_result:
        return await self._run(self.ws.lstat, Workspace.resolve(path))

    async def stat(self, path: bytes) -> os.stat_result:
        return await self.lstat(path)

    async def scandir(self, path: bytes) -> Any:
        rel = Workspace.resolve(path)
        entries = await self._run(self.ws.list_folder, rel)
        here = await self._run(self.ws.lstat, rel)
        yield asyncssh.SFTPName(b".", attrs=asyncssh.SFTPAttrs.from_local(here))
        yield asyncssh.SFTPName(b"..", attrs=asyncssh.SFTPAttrs.from_local(here))
        for name, st in entries:
            yield asyncssh.SFTPName(
                name.encode("utf-8", "surrogateescape"), attrs=asyncssh.SFTPAttrs.from_local(st)
            )

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self.lstat(path)  # times and modes are the server's: accepted, not applied

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self.lstat(path)

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    async def fstat(self, file_obj: object) -> os.stat_result:
        fd = file_obj.fd if isinstance(file_obj, Upload | Reader) else -1
        return await self._run(os.fstat, fd)

    # -- files ----------------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        rel = Workspace.resolve(path)
        if not pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND):
            return await self._run(self.ws.open_read, rel)
        truncate = bool(pflags & asyncssh.FXF_TRUNC)
        exclusive = bool(pflags & asyncssh.FXF_EXCL)
        upload = await self._run(
            functools.partial(self.ws.open_write, rel, truncate=truncate, exclusive=exclusive)
        )
        try:
            await self.server.recount(self.account)
        except BaseException:
            await self._run(self.ws.discard, upload)
            raise
        return upload

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, Reader):
            raise asyncssh.SFTPPermissionDenied("this file was opened for writing")
        return await self._run(Workspace.read, file_obj, offset, min(size, 256 * 1024))

    def _check_folder(self, meter: Meter, upload: Upload, growth: int) -> None:
        quota = self.account.workspace_quota
        if growth > 0 and meter.folder_bytes + growth > quota:
            self._refuse(
                upload,
                f"quota exceeded: the folder may hold {quota} bytes and holds "
                f"{meter.folder_bytes}; this upload is discarded",
            )

    def _refuse(self, upload: Upload, message: str) -> None:
        upload.refused = message
        log.warning(
            "drop box: %r: upload of %r refused: %s", self.account.username, upload.rel, message
        )
        raise asyncssh.SFTPFailure(message)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, Upload):
            raise asyncssh.SFTPPermissionDenied("this file was opened for reading")
        upload = file_obj
        if upload.refused is not None:
            raise asyncssh.SFTPFailure(upload.refused)
        meter = self.server.meter(self.account)
        today = meter.recorded_today + meter.pending
        if today + len(data) > self.account.daily_quota:
            self._refuse(
                upload,
                f"quota exceeded: {self.account.daily_quota} bytes may be uploaded per day "
                f"(UTC) and {today} were; this upload is discarded",
            )
        growth = max(0, offset + len(data) - upload.size)
        self._check_folder(meter, upload, growth)
        await self._run(Workspace.write, upload, offset, data)
        meter.folder_bytes += growth
        meter.pending += len(data)
        upload.received += len(data)
        return len(data)

    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, Reader):
            await self._run(Workspace.close_reader, file_obj)
            return
        if not isinstance(file_obj, Upload) or file_obj.closed:
            return
        upload = file_obj
        try:
            if upload.refused is not None or self._session_ending():
                await self._run(self.ws.discard, upload)
                if upload.refused is not None:
                    raise asyncssh.SFTPFailure(upload.refused)
                log.warning(
                    "drop box: %r: the session ended before %r was closed; discarded",
                    self.account.username,
                    upload.rel,
                )
                return
            done = await self._run(self.ws.commit, upload)
        finally:
            await self.server.uploaded(self.account, upload)
        self._announce(done)

    def _announce(self, done: RemoteFile) -> None:
        account = self.account
        if not self.server.wake(account.tenant, account.connector, done):
            log.info(
                "drop box: connector %s/%s does not run in this process; %r is found by its "
                "next poll",
                account.tenant,
                account.connector,
                done.path,
            )

    # -- changes --------------------------------------------------------------------------------

    async def remove(self, path: bytes) -> None:
        await self._run(self.ws.remove, Workspace.resolve(path))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = Workspace.resolve(oldpath), Workspace.resolve(newpath)
        done = await self._run(functools.partial(self.ws.rename, old, new, replace=False))
        self._announce(done)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = Workspace.resolve(oldpath), Workspace.resolve(newpath)
        done = await self._run(functools.partial(self.ws.rename, old, new, replace=True))
        self._announce(done)

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self._run(self.ws.make_folder, Workspace.resolve(path))

    async def rmdir(self, path: bytes) -> None:
        await self._run(self.ws.remove_folder, Workspace.resolve(path))

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("there are no symbolic links here")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("symbolic links cannot be made in the drop box")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links cannot be made in the drop box")

    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    async def fsync(self, file_obj: object) -> None:
        return None  # an upload is fsync'd when it is closed
