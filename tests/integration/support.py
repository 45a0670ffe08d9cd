"""Helpers shared by the integration tests: settings builders, SFTP uploads, topic readers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import aiohttp
import paramiko
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pydantic import SecretStr
from servers.s3 import S3Server
from servers.sshd import SftpServer
from sqlalchemy import update

from connectors.local import LocalConfig
from connectors.poller import PollConfig
from connectors.s3 import S3Config
from connectors.sftp import SftpConfig
from streams.cases.store import CaseStore, analysis_results
from streams.clock import Clock
from streams.codec import AvroCodec
from streams.metrics import Metrics
from streams.service import Service
from streams.settings import ConnectorSettings, Settings, TenantSettings
from streams.topics import LANES, Topics

CODEC = AvroCodec()
FAST_POLL = PollConfig(interval_seconds=0.3, min_age_seconds=0)


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_prefix() -> str:
    """Return a topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def sftp_config(server: SftpServer, user: str = "cs_pw", **overrides: Any) -> SftpConfig:
    """Connector config for one of the test server's users, host key pinned."""
    account = server.users[user]
    creds: dict[str, Any] = (
        {"password": account.password}
        if account.password is not None
        else {"private_key_path": account.private_key_path}
    )
    base: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": account.name,
        "host_key": server.host_key_line,
        "root": server.remote_upload_dir(),
        **creds,
    }
    base.update(overrides)
    return SftpConfig(**base)


def s3_config(server: S3Server, bucket: str, **overrides: Any) -> S3Config:
    """Connector config for a bucket on the test S3 server, with the key it issued."""
    base: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "addressing_style": "path",
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 10,
        "max_attempts": 2,
        **overrides,
    }
    return S3Config(**base)


def connector(
    name: str, store: SftpConfig | LocalConfig | S3Config, **poll: Any
) -> ConnectorSettings:
    """A connector with fast polling (overridable)."""
    return ConnectorSettings(
        name=name, store=store, poll=PollConfig.model_validate({**FAST_POLL.model_dump(), **poll})
    )


def settings_for(
    kafka: str,
    prefix: str,
    data_dir: Path,
    connectors: list[ConnectorSettings],
    /,
    *,
    tenant: str = "acme",
    database_url: str | None = None,
    **extra: Any,
) -> Settings:
    """Settings for an in-process service against the session's real servers; ``extra``
    sections (``kafka={...}``, ``processors={...}``) merge into the defaults."""
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "kafka": {"bootstrap_servers": kafka, "topic_prefix": prefix, "partitions": 3},
        "database": {"url": database_url},
        "http": {"port": 0},
        "runner": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0},
        "tenants": [TenantSettings(id=tenant, connectors=connectors)],
        "demo": False,
    }
    for section, value in extra.items():  # sections merge; plain fields replace
        if isinstance(value, dict) and isinstance(fields.get(section), dict):
            fields[section] = {**fields[section], **value}
        else:
            fields[section] = value
    return Settings(**fields)


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Service]:
    """Run a service in this event loop for the duration of the block (on ``clock``: a
    :class:`~streams.clock.ManualClock` lets a test move the service's time)."""
    service = Service(settings, metrics=Metrics(), say=lambda _line: None, clock=clock)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def running_connectors(service: Service) -> list[dict[str, Any]]:
    """``GET /connectors`` as the operator (the service's ``api.operator_token``, which the test
    sets): the status of every connector the service runs."""
    token = service.settings.api.operator_token
    assert token is not None, "/connectors is the operator's: set api.operator_token"
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{service.http_url}/connectors", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    connectors: list[dict[str, Any]] = body["connectors"]
    return connectors


@contextlib.contextmanager
def sftp_session(server: SftpServer, user: str = "cs_pw") -> Iterator[paramiko.SFTPClient]:
    """An SFTP client session as a tenant would open it (host key checked)."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == server.host_key_line
        account = server.users[user]
        if account.password is not None:
            transport.auth_password(account.name, account.password)
        else:
            assert account.private_key_path is not None
            transport.auth_publickey(
                account.name, paramiko.PKey.from_path(account.private_key_path)
            )
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        yield sftp
    finally:
        transport.close()


def upload(sftp: paramiko.SFTPClient, path: str, data: bytes, mtime: float | None = None) -> None:
    """Upload ``data`` to ``/upload/<path>`` (creating folders) and optionally set its mtime."""
    remote = f"/upload/{path}"
    parts = remote.split("/")[1:-1]
    for i in range(2, len(parts) + 1):
        folder = "/" + "/".join(parts[:i])
        with contextlib.suppress(OSError):
            sftp.mkdir(folder)
    sftp.putfo(io.BytesIO(data), remote)
    if mtime is not None:
        sftp.utime(remote, (mtime, mtime))


class FromStart:
    """Consumes topics from their first offsets, the way a test reads what the service wrote.

    Partitions are assigned by the reader itself, each from its first offset, as soon as its
    topic exists (a reader is often made before the service creates its topics). There is no
    consumer group, so :meth:`close` never waits on a rebalance: librdkafka can hang for good
    in a group consumer's close while an assignment is in flight (confluentinc/librdkafka#4884;
    a CI run hung so, closing a reader made and closed within one test).
    """

    def __init__(self, bootstrap: str, topics: str | Sequence[str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",  # required by the client; never joined
                "enable.auto.commit": False,
            }
        )
        self._waiting = {topics} if isinstance(topics, str) else set(topics)
        self._next_look = 0.0

    def consume(self, count: int, timeout: float) -> list[Message]:
        """Up to ``count`` messages within ``timeout`` seconds (errors included, as the client's
        ``consume``), after assigning the awaited topics that exist now."""
        if self._waiting and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + 0.2
            known = self._consumer.list_topics(timeout=10).topics
            ready = {
                t
                for t in self._waiting
                if t in known and known[t].error is None and known[t].partitions
            }  # a topic still being created may list no partitions yet: look again later
            partitions = [
                TopicPartition(t, p, OFFSET_BEGINNING) for t in ready for p in known[t].partitions
            ]
            if partitions:
                self._consumer.incremental_assign(partitions)
            self._waiting -= ready
        return list(self._consumer.consume(count, timeout))

    def close(self) -> None:
        """Close the client (no group to leave)."""
        self._consumer.close()


class TopicReader:
    """Reads and decodes every record of one topic (or several of one schema: both lanes'
    file arrivals, :func:`arrival_topics`) from the beginning (:class:`FromStart`)."""

    def __init__(
        self, kafka: str, topic: str | Sequence[str], schema: str = "callstream.FileArrival"
    ) -> None:
        self.schema = schema
        self.records: list[dict[str, Any]] = []
        self._kept: list[bytes] = []
        self._consumer = FromStart(kafka, topic)

    def poll(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        """Read what arrived within ``seconds``; return the new records."""
        self.decode_kept()
        new = [CODEC.decode(self.schema, value) for value in self._consume(seconds)]
        self.records.extend(new)
        return new

    def keep(self, seconds: float = 0.5) -> int:
        """Read what arrived within ``seconds`` but keep it undecoded (a benchmark's reader must
        not take CPU from the service it times); return how many values arrived.
        :meth:`decode_kept` (or the next :meth:`poll`) adds them to ``records``."""
        values = self._consume(seconds)
        self._kept.extend(values)
        return len(values)

    @property
    def count(self) -> int:
        """Records read so far, decoded or kept."""
        return len(self.records) + len(self._kept)

    def decode_kept(self) -> None:
        """Decode the values :meth:`keep` read into ``records``."""
        self.records.extend(CODEC.decode(self.schema, value) for value in self._kept)
        self._kept.clear()

    def _consume(self, seconds: float) -> list[bytes]:
        values: list[bytes] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for msg in self._consumer.consume(500, min(left, 0.2)):
                value = msg.value()
                if msg.error() is None and value is not None:
                    values.append(value)
        return values

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Read until ``predicate(all records)`` holds; fail with what was seen on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                paths = [r.get("path") for r in self.records]
                raise AssertionError(f"timed out after {timeout}s; records so far: {paths}")
            await asyncio.to_thread(self.poll, 0.3)
        return self.records

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def publish(kafka: str, topic: str, schema: str, key: str, record: dict[str, Any]) -> None:
    """Produce one Avro record and wait for the broker's acknowledgement."""
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(topic, key=key.encode(), value=CODEC.encode(schema, record))
    assert producer.flush(30) == 0


def topics(prefix: str) -> Topics:
    """The topic names for a prefix."""
    return Topics(prefix)


def arrival_topics(prefix: str) -> list[str]:
    """The file-arrival topics of both lanes: a file of ``processors.bulk_file_bytes`` or more
    is announced on the bulk lane's."""
    return [Topics(prefix).in_lane(lane).file_arrivals for lane in LANES]


def chown_tree(path: Path, like: Path) -> None:
    """Give ``path`` and everything below it the owner of ``like`` (files made as root)."""
    st = like.stat()
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), st.st_uid, st.st_gid)
    os.lchown(path, st.st_uid, st.st_gid)


CSV_HEADER = (
    "external_interaction_id,channel,direction,started_at,ended_at,agent_id,agent_name,"
    "team,campaign,ani,dnis,recording_url,disposition\n"
)


def conversation_row(i: int, *, disposition: str = "resolved") -> str:
    """One valid CSV row for conversation ``CALL-<i>``."""
    minute = i % 50
    return (
        f"CALL-{i:06d},voice,inbound,2026-11-20T09:{minute:02d}:00Z,2026-11-20T09:{minute:02d}:45Z,"
        f"a-{i % 17},Agent {i % 17},Billing,winter,+1415555{i % 10000:04d},+18005550100,"
        f"recordings/{i:06d}.wav,{disposition}\n"
    )


def conversation_record(ext: str, **changes: Any) -> dict[str, Any]:
    """A valid Conversation record as a producer would publish it (no source file)."""
    record: dict[str, Any] = {
        "tenant": "acme",
        "source_system": "crm",
        "external_interaction_id": ext,
        "channel": "voice",
        "direction": None,
        "started_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
        "ended_at": None,
        **dict.fromkeys(("agent_id", "agent_name", "team", "campaign", "ani", "dnis"), None),
        "recording_ref": None,
        "transcript_ref": None,
        "turns": [],
        "metadata": {},
        "source": None,
    }
    record.update(changes)
    return record


def conversations_csv(count: int, start: int = 0) -> bytes:
    """A CSV export of ``count`` valid conversations."""
    return (CSV_HEADER + "".join(conversation_row(i) for i in range(start, start + count))).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def write_config(path: Path, settings: Settings, exclude: frozenset[str] = frozenset()) -> Path:
    """Write ``settings`` as the YAML file a separate ``callstream run`` process reads, less the
    top-level fields in ``exclude`` (the process then uses its own defaults for them)."""
    path.write_text(yaml.safe_dump(_plain(settings.model_dump(exclude=set(exclude)))))
    return path


CALLSTREAM = (sys.executable, "-m", "streams")
"""The ``callstream`` command of this checkout."""


def start_service(
    config: Path,
    log: Path,
    env: dict[str, str] | None = None,
    *,
    command: Sequence[str] = CALLSTREAM,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``callstream run`` as its own process (as in production), logging to ``log``;
    ``command`` is another installation's ``callstream`` executable."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*command, "--config", str(config), "run", "--no-echo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def wait_for_log(log: Path, text: str, timeout: float) -> None:
    """Wait until ``text`` appears in a service's log; fail with the log's tail on timeout."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.3)


async def seed_results(
    settings: Settings,
    records: Iterable[dict[str, Any]],
    *,
    analysed_at: dt.datetime,
    tenant: str = "acme",
) -> None:
    """Write ``records`` (:func:`conversation_record`) into the results database through the
    case store, 500 a batch, then mark all of ``tenant``'s results analysed at ``analysed_at``.
    Their outbox rows name the service's own topics, which its relay publishes to."""
    topics = Topics(settings.kafka.topic_prefix)
    store = CaseStore(settings.database_url, AvroCodec(), topics, settings.profiles_of)
    async with store:
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) == 500:
                await store.apply(batch)
                batch = []
        if batch:
            await store.apply(batch)
        async with store.engine.begin() as conn:
            await conn.execute(
                update(analysis_results)
                .where(analysis_results.c.tenant == tenant)
                .values(analysed_at=analysed_at)
            )
