"""The hosted SFTP drop box in integration tests and benchmarks: accounts made through the API,
clients (paramiko with the host key pinned, OpenSSH's ``sftp`` in batch mode)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
from api_support import ApiClient

from streams.service import Service


@dataclass
class Login:
    """A drop-box account as a customer holds it."""

    username: str
    password: str
    key_path: Path
    account_id: str
    connector_id: str
    folder: Path


def new_key(path: Path) -> str:
    """Write an Ed25519 private key (OpenSSH format, 0600) to ``path``; return its public line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key.export_public_key().decode().strip()


async def new_login(
    api: ApiClient,
    data_dir: Path,
    tenant: str,
    username: str,
    keys_dir: Path,
    *,
    connector: str | None = None,
    poll: dict[str, Any] | None = None,
    **account: Any,
) -> Login:
    """Create a local connector of ``tenant`` (unless ``connector`` names one) and an account
    on it with a password and a key."""
    folder = data_dir / "local" / tenant / (connector or username)
    connector_id = connector
    if connector_id is None:
        made = await api.post(
            "/v1/connectors",
            {
                "name": username,
                "store": {"type": "local", "root": str(folder), "create": True},
                "poll": poll or {},
            },
        )
        assert made.status == 201, made.text
        connector_id = made.body["id"]
    key_path = keys_dir / f"{username}.key"
    password = f"{username}-password-0123"
    created = await api.post(
        "/v1/dropbox/accounts",
        {
            "username": username,
            "connector_id": connector_id,
            "password": password,
            "public_keys": [new_key(key_path)],
            "allow_from": ["127.0.0.0/8"],
            **account,
        },
    )
    assert created.status == 201, created.text
    assert "password" not in created.body and created.body["has_password"] is True
    return Login(username, password, key_path, created.body["id"], str(connector_id), folder)


def known_hosts(service: Service, path: Path) -> Path:
    """Write a known_hosts file holding the drop box's host key."""
    assert service.dropbox is not None
    path.write_text(f"[127.0.0.1]:{service.dropbox.port} {service.dropbox.host_key_line}\n")
    return path


def paramiko_session(
    service: Service, login: Login, *, use_key: bool = False
) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """Log in with paramiko, checking the host key against the drop box's."""
    assert service.dropbox is not None
    sock = socket.create_connection(("127.0.0.1", service.dropbox.port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == service.dropbox.host_key_line
        if use_key:
            transport.auth_publickey(login.username, paramiko.PKey.from_path(login.key_path))
        else:
            transport.auth_password(login.username, login.password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
    except BaseException:
        transport.close()
        raise
    return transport, sftp


def openssh_batch(
    service: Service, login: Login, known: Path, commands: list[str], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH's ``sftp -b`` with ``commands`` as the account (key login, host key
    checked strictly)."""
    assert service.dropbox is not None
    batch = workdir / "batch.txt"
    batch.write_text("\n".join(commands) + "\n")
    return subprocess.run(
        [
            "sftp",
            "-b",
            str(batch),
            "-i",
            str(login.key_path),
            "-P",
            str(service.dropbox.port),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"{login.username}@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        check=False,
    )
