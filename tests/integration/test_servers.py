"""The real test servers start and behave as the harness promises.

* OpenSSH: both SFTP users log in with a pinned host key (no auto-accept), list and write
  their ``/upload`` folder, and stay confined to their chroot.
* PostgreSQL: asyncpg connects with ``dsn`` and runs ``select 1``; ``reset()`` works.

No skips: a server that cannot start fails the test with its log tail.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import asyncpg
import paramiko
import pytest
from servers.postgres import PostgresServer
from servers.sshd import SftpServer


def _open_sftp(server: SftpServer, user: str) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """Connect with the host key pinned, then authenticate as ``user``."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == server.host_key_line
        assert key.fingerprint == server.host_key_fingerprint
        account = server.users[user]
        if account.password is not None:
            transport.auth_password(account.name, account.password)
        else:
            assert account.private_key_path is not None
            pkey = paramiko.Ed25519Key.from_private_key_file(str(account.private_key_path))
            transport.auth_publickey(account.name, pkey)
        assert transport.is_authenticated()
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
    except BaseException:
        transport.close()
        raise
    return transport, sftp


def test_sftp_server_exposes_two_users(sftp_server: SftpServer) -> None:
    assert set(sftp_server.users) == {"cs_pw", "cs_key"}
    pw, key = sftp_server.users["cs_pw"], sftp_server.users["cs_key"]
    assert pw.password and pw.private_key_path is None
    assert key.password is None and key.private_key_path is not None
    assert key.private_key_path.is_file()
    assert sftp_server.host_key_line.startswith("ssh-ed25519 AAAA")
    assert sftp_server.host_key_fingerprint.startswith("SHA256:")
    assert sftp_server.remote_upload_dir() == "/upload"
    for name, user in sftp_server.users.items():
        assert sftp_server.upload_dir(name) == user.home / "upload"
        assert user.home.stat().st_uid == 0


@pytest.mark.parametrize("user", ["cs_pw", "cs_key"])
def test_sftp_login_list_put(sftp_server: SftpServer, user: str) -> None:
    transport, sftp = _open_sftp(sftp_server, user)
    try:
        remote_dir = sftp_server.remote_upload_dir()
        before = set(sftp.listdir(remote_dir))
        payload = f"hello from {user}\n".encode()
        name = f"probe-{uuid.uuid4().hex}.txt"
        with sftp.open(f"{remote_dir}/{name}", "wb") as fh:
            fh.write(payload)
        assert set(sftp.listdir(remote_dir)) == before | {name}
        assert sftp.stat(f"{remote_dir}/{name}").st_size == len(payload)
    finally:
        sftp.close()
        transport.close()
    on_disk = sftp_server.upload_dir(user) / name
    assert on_disk.read_bytes() == payload
    on_disk.unlink()  # leave the shared folder as found


@pytest.mark.parametrize("user", ["cs_pw", "cs_key"])
def test_sftp_user_is_confined_to_chroot(sftp_server: SftpServer, user: str) -> None:
    transport, sftp = _open_sftp(sftp_server, user)
    try:
        assert sftp.listdir("/") == ["upload"]
        assert sftp.listdir("/..") == ["upload"]
        assert sftp.listdir("/../..") == ["upload"]
        assert sftp.normalize("/..") == "/"
        with pytest.raises(FileNotFoundError):
            sftp.stat("/etc/passwd")
        with pytest.raises(PermissionError):  # chroot root is root-owned
            sftp.open("/outside-upload.txt", "wb")
    finally:
        sftp.close()
        transport.close()


def test_sftp_user_rejects_other_auth_method(sftp_server: SftpServer) -> None:
    transport = paramiko.Transport((sftp_server.host, sftp_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password(sftp_server.users["cs_key"].name, "not-the-password")
    finally:
        transport.close()


def test_postgres_select_one(pg_server: PostgresServer) -> None:
    assert pg_server.dsn == (
        f"postgresql://callstream:{pg_server.password}@127.0.0.1:{pg_server.port}/callstream"
    )
    assert pg_server.async_url().startswith("postgresql+asyncpg://callstream:")

    async def query() -> tuple[int, str, str]:
        conn = await asyncpg.connect(pg_server.dsn, timeout=10)
        try:
            row = await conn.fetchrow("select 1 as one, current_user, current_database()")
            assert row is not None
            return row["one"], row["current_user"], row["current_database"]
        finally:
            await conn.close()

    assert asyncio.run(query()) == (1, "callstream", "callstream")


def test_postgres_reset_gives_empty_database(pg_server: PostgresServer) -> None:
    async def create_table() -> None:
        conn = await asyncpg.connect(pg_server.dsn, timeout=10)
        try:
            await conn.execute("create table leftover (id int)")
        finally:
            await conn.close()

    async def tables() -> list[str]:
        conn = await asyncpg.connect(pg_server.dsn, timeout=10)
        try:
            rows = await conn.fetch("select tablename from pg_tables where schemaname = 'public'")
            return [r["tablename"] for r in rows]
        finally:
            await conn.close()

    asyncio.run(create_table())
    assert "leftover" in asyncio.run(tables())  # other tests of the session may have left more
    pg_server.reset()
    assert asyncio.run(tables()) == []
