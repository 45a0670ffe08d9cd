"""The real test servers start and behave as the harness promises.

* OpenSSH: both SFTP users log in with a pinned host key (no auto-accept), list and write
  their ``/upload`` folder, and stay confined to their chroot.
* PostgreSQL: asyncpg connects with ``dsn`` and runs ``select 1``; ``reset()`` works.
* moto S3: the issued key works, a wrong key id or secret is refused, and a server that cannot
  start raises ``ServerStartError`` with its log tail.

No skips: a server that cannot start fails the test with its log tail.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import asyncpg
import botocore.exceptions
import paramiko
import pytest
import servers.s3
from servers import ServerStartError
from servers.postgres import PostgresServer
from servers.s3 import S3Server
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


def test_s3_server_checks_credentials(s3_server: S3Server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="probe.txt", Body=b"hello")
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="probe.txt")["Body"].read()
    assert body == b"hello"
    refusals = {
        "SignatureDoesNotMatch": s3_server.client(aws_secret_access_key="not-the-secret"),
        "InvalidAccessKeyId": s3_server.client(aws_access_key_id="AKIAIOSFODNN7EXAMPLE"),
    }
    for code, client in refusals.items():
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client.list_objects_v2(Bucket=s3_bucket)
        assert caught.value.response["Error"]["Code"] == code


def test_s3_server_that_cannot_start_fails_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:  # the port moto is given is already in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(servers.s3, "free_port", lambda _host: taken.getsockname()[1])
        server = S3Server(tmp_path)
        with pytest.raises(ServerStartError) as caught:
            server.start(timeout=30)
    assert "moto S3 server failed to start" in str(caught.value)
    assert "Address already in use" in caught.value.log_tail
