"""Real servers for the integration suite and the benchmarks, started once per session.

Apache Kafka (KRaft, from its Maven Central jars), OpenSSH's sftp server, PostgreSQL and moto's
S3 server (credentials checked). A
server that cannot start raises, so every test that needs it *fails* with the reason and the
server's log tail; nothing here skips.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from servers.postgres import PostgresServer
from servers.s3 import S3Server
from servers.smtp import SmtpServer
from servers.sshd import SftpServer
from support import unique_prefix

from streams.embedded.kafka import LocalKafka
from streams.state import ConnectorState

SFTP_TEST_ROOT = Path("/srv/callstream-test")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real single-node Kafka 3.9 broker."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start(timeout=120)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


PLATFORM_USER = "platform-callstream"
PLATFORM_PASSWORD = "platform-scram-Secret-3"


@pytest.fixture(scope="session")
def platform_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A second real broker acting as a contact-centre platform's own cluster: a SASL/SCRAM
    listener (user PLATFORM_USER) for callstream, a PLAINTEXT one for the test's own clients."""
    broker = LocalKafka(
        tmp_path_factory.mktemp("platform-kafka"), scram_users={PLATFORM_USER: PLATFORM_PASSWORD}
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """OpenSSH sshd with internal-sftp: user cs_pw (password) and cs_key (ed25519 key)."""
    base = SFTP_TEST_ROOT / uuid.uuid4().hex
    server = SftpServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server owned by the test session."""
    # Not tmp_path_factory: pytest's /tmp/pytest-of-root is mode 0700, which the `postgres`
    # user cannot traverse; mkdtemp under /tmp is reachable once PostgresServer opens it up.
    base = Path(tempfile.mkdtemp(prefix="callstream-pg-"))
    server = PostgresServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on loopback; requests must be signed with its issued access key."""
    server = S3Server(tmp_path_factory.mktemp("moto"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """aiosmtpd on loopback with STARTTLS and AUTH, keeping every message it accepts."""
    server = SmtpServer(tmp_path_factory.mktemp("smtp"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def mail_settings(server: SmtpServer, **overrides: object) -> dict[str, object]:
    """The ``mail:`` settings that send through ``server`` (STARTTLS, login, its CA)."""
    return {
        "host": server.host,
        "port": server.port,
        "security": "starttls",
        "username": server.username,
        "password": server.password,
        "from_address": "callstream@example.com",
        "ca_file": str(server.ca_file),
    } | overrides


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket of this test's own (deleted with its objects afterwards)."""
    bucket = s3_server.create_bucket()
    try:
        yield bucket
    finally:
        s3_server.delete_bucket(bucket)


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own."""
    return unique_prefix()


@pytest.fixture
def clean_upload(sftp_server: SftpServer) -> Iterator[Path]:
    """The cs_pw user's upload folder on disk; both users' folders are emptied around the test."""
    folders = [sftp_server.upload_dir(user) for user in ("cs_pw", "cs_key")]
    for folder in folders:
        empty_folder(folder)
    yield folders[0]
    for folder in folders:
        empty_folder(folder)


def empty_folder(folder: Path) -> None:
    """Remove everything inside ``folder``."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: PostgresServer
) -> Iterator[str]:
    """The same tests against the embedded SQLite file and the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    else:
        pg_server.reset()
        yield pg_server.async_url()


@pytest.fixture
async def state(database_url: str) -> AsyncIterator[ConnectorState]:
    """A started connector-state store on each database."""
    async with ConnectorState(database_url) as store:
        yield store
