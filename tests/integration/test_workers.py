"""Three workers share six connectors through Kafka's group membership; one is SIGKILLed.

Three ``callstream run`` processes against one broker and one PostgreSQL database, six
connectors (three SFTP, three local folders) whose keys fall on six different partitions of the
file-outcomes topic. The test shows, from each worker's own /connectors and /metrics:

1. every connector is polled by exactly one worker (its poll count moves in one worker only);
2. after a SIGKILL, the dead worker's connectors are polled by the others within the session
   timeout (the time is printed), and the files dropped meanwhile are processed;
3. a fourth worker joining takes a share;

and ends with every file processed once (each conversation read once onto the conversations
topic; an arrival redelivered after the kill only re-publishes its recorded outcome), 0 lost and
0 duplicate cases.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from api_support import OPERATOR_TOKEN
from confluent_kafka import Consumer
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    CODEC,
    chown_tree,
    connector,
    conversations_csv,
    free_port,
    settings_for,
    sftp_config,
    start_service,
    write_config,
)

from connectors.local import LocalConfig
from streams.cases.store import CaseStore
from streams.codec import AvroCodec
from streams.ownership import connector_key, partition_of
from streams.topics import Topics

PARTITIONS = 6
SESSION_TIMEOUT = 6.0
ROWS_PER_FILE = 10


def _names() -> list[str]:
    """Six connector names on six different partitions (so each worker owns some)."""
    chosen: dict[int, str] = {}
    for i in itertools.count():
        name = f"c{i}"
        chosen.setdefault(partition_of(connector_key("acme", name), PARTITIONS), name)
        if len(chosen) == PARTITIONS:
            return [chosen[p] for p in range(PARTITIONS)]
    raise AssertionError("unreachable")


class Worker:
    """One ``callstream run`` process with its own data folder and HTTP port."""

    def __init__(self, name: str, config: Path, tmp: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] = start_service(
            config,
            self.log,
            {"CALLSTREAM_HTTP__PORT": str(self.port), "CALLSTREAM_DATA_DIR": str(tmp / name)},
        )

    def get(self, path: str) -> bytes:
        """GET ``path`` as the operator (/connectors is the operator's)."""
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        return bytes(urllib.request.urlopen(request, timeout=10).read())  # noqa: S310 (http only)

    def connectors(self) -> set[str]:
        """The connectors this worker runs now (empty while it is not serving)."""
        try:
            body = json.loads(self.get("/connectors"))
        except OSError:
            return set()
        return {c["connector"] for c in body["connectors"]}

    def listed(self) -> dict[str, float]:
        """Its poll count per connector (the poll-duration histogram's count)."""
        text = self.get("/metrics").decode()
        out: dict[str, float] = {}
        for labels, value in re.findall(
            r"^callstream_connector_poll_duration_seconds_count\{([^}]*)\} (\S+)$", text, re.M
        ):
            name = re.search(r'connector="([^"]*)"', labels)
            assert name is not None
            out[name.group(1)] = float(value)
        return out

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _owners(workers: list[Worker]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = collections.defaultdict(list)
    for w in workers:
        for c in w.connectors():
            owners[c].append(w.name)
    return owners


def _balanced(workers: list[Worker], names: list[str]) -> bool:
    """Every connector runs in exactly one worker, and every worker runs at least one."""
    owned = [w.connectors() for w in workers]
    every = sorted(c for mine in owned for c in mine)
    return every == sorted(names) and all(owned)


def _wait(what: str, check: object, timeout: float, workers: list[Worker]) -> float:
    """Wait until ``check()`` is true; return the seconds it took."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        for w in workers:
            assert w.proc.poll() is None, f"{w.name} exited:\n{w.tail()}"
        if time.monotonic() - started > timeout:
            tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(0.3)
    return time.monotonic() - started


def test_three_workers_share_six_connectors_and_survive_a_sigkill(
    capsys: pytest.CaptureFixture[str],
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    pg_server: PostgresServer,
    tmp_path: Path,
) -> None:
    pg_server.reset()
    names = _names()
    folders: dict[str, Path] = {}
    conns = []
    for i, name in enumerate(names):
        if i % 2 == 0:  # SFTP: a folder of its own in the server's upload folder
            folder = clean_upload / name
            folder.mkdir()
            chown_tree(folder, clean_upload)
            store = sftp_config(sftp_server, root=f"{sftp_server.remote_upload_dir()}/{name}")
        else:
            folder = tmp_path / "local" / name
            folder.mkdir(parents=True)
            store = LocalConfig(root=folder)
        folders[name] = folder
        conns.append(connector(name, store, interval_seconds=0.5, min_age_seconds=0.5))
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        conns,
        database_url=pg_server.async_url(),
        kafka={"partitions": PARTITIONS},
        processors={"session_timeout_seconds": SESSION_TIMEOUT},
        api={"operator_token": OPERATOR_TOKEN},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    serial = itertools.count()

    def drop_round() -> int:
        """One new file in every connector's folder (written aside, then moved in)."""
        for name, folder in folders.items():
            n = next(serial)
            staged = folder.parent / f".{name}-{n}.tmp"
            staged.write_bytes(conversations_csv(ROWS_PER_FILE, start=n * ROWS_PER_FILE))
            os.replace(staged, folder / f"export-{n:03d}.csv")
            chown_tree(folder, folder.parent)
        return len(folders)

    workers = [Worker(f"w{i}", config, tmp_path) for i in range(3)]
    everyone = list(workers)
    try:
        # 1. Each connector is run, and polled, by exactly one of the three workers.
        _wait(
            "every connector to be owned once, every worker owning some",
            lambda: _balanced(workers, names),
            120,
            workers,
        )
        owners = _owners(workers)
        before = [w.listed() for w in workers]
        time.sleep(3)
        after = [w.listed() for w in workers]
        for name in names:
            polled_by = [
                w.name
                for w, b, a in zip(workers, before, after, strict=True)
                if a.get(name, 0) > b.get(name, 0)
            ]
            assert polled_by == owners[name], (name, polled_by, owners[name])
        files = drop_round()
        expected_cases = files * ROWS_PER_FILE

        async def cases() -> int:
            codec, topics = AvroCodec(), Topics(prefix)
            async with CaseStore(pg_server.async_url(), codec, topics, lambda _t: ()) as store:
                return await store.count_cases("acme")

        _wait(
            "the first round's cases",
            lambda: asyncio.run(cases()) >= expected_cases,
            180,
            workers,
        )

        # 2. SIGKILL a worker: its connectors move to the others within the session timeout.
        victim = workers[0]
        theirs = {c for c, o in _owners(workers).items() if o == [victim.name]}
        assert theirs, _owners(workers)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        killed_at = time.monotonic()
        workers = workers[1:]
        files += drop_round()
        expected_cases = files * ROWS_PER_FILE
        _wait(
            "the dead worker's connectors to move",
            lambda: set(_owners(workers)) >= theirs,
            SESSION_TIMEOUT + 30,
            workers,
        )
        moved = time.monotonic() - killed_at
        owners = _owners(workers)
        assert all(len(o) == 1 for o in owners.values()), owners
        _wait(
            "the second round's cases",
            lambda: asyncio.run(cases()) >= expected_cases,
            180,
            workers,
        )

        # 3. A fourth worker joins and takes a share.
        joined = Worker("w3", config, tmp_path)
        everyone.append(joined)
        workers.append(joined)
        share = _wait("the new worker's share", lambda: _balanced(workers, names), 90, workers)
        owners = _owners(workers)
        files += drop_round()
        expected_cases = files * ROWS_PER_FILE
        _wait(
            "the third round's cases",
            lambda: asyncio.run(cases()) >= expected_cases,
            180,
            workers,
        )
        time.sleep(2)  # a duplicate would land now
        final_cases = asyncio.run(cases())
    finally:
        for w in everyone:
            w.stop()

    topics = Topics(prefix)
    outcomes = _read(kafka, topics.file_outcomes, "callstream.FileOutcome")
    per_file = collections.Counter(o["file_id"] for o, _p in outcomes)
    read = _read(kafka, topics.conversations, "callstream.Conversation")
    per_call = collections.Counter(c["external_interaction_id"] for c, _p in read)
    with capsys.disabled():
        print(
            f"\n3 workers, 6 connectors: owners {dict(owners)}; after SIGKILL of {victim.name} "
            f"(owned {sorted(theirs)}) its connectors were polled again after {moved:.1f}s "
            f"(session timeout {SESSION_TIMEOUT:.0f}s); the 4th worker took a share after "
            f"{share:.1f}s; {files} files -> {len(per_file)} judged, {len(per_call)} "
            f"conversations read from them ({sum(per_call.values())} records), {final_cases} "
            f"cases (expected {expected_cases}); {len(outcomes) - len(per_file)} outcomes "
            "published again for redelivered arrivals (already decided: not read again)"
        )
    assert moved <= SESSION_TIMEOUT + 15
    assert final_cases == expected_cases  # 0 lost, 0 duplicate cases
    assert len(per_file) == files, per_file
    # Every file was read once: each conversation is on the topic once.
    assert len(per_call) == expected_cases and set(per_call.values()) == {1}, per_call
    for outcome, partition in outcomes:  # outcomes land where their connector's owner reads
        assert outcome["outcome"] == "processed", outcome
        key = connector_key(outcome["tenant"], outcome["connector"])
        assert partition == partition_of(key, PARTITIONS), (outcome, partition)


def _read(kafka: str, topic: str, schema: str) -> list[tuple[dict[str, object], int]]:
    """Every record of ``topic`` with the partition it is in."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"check-{os.getpid()}-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[dict[str, object], int]] = []
    idle = time.monotonic() + 10
    while time.monotonic() < idle:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is None and msg.value() is not None:
                out.append((CODEC.decode(schema, msg.value()), msg.partition()))
                idle = time.monotonic() + 3
    consumer.close()
    return out
