"""SIGKILL the worker three times while it processes a 20,000-row file: no case lost or doubled.

Each kill lands at a random point (by progress on the feedback topic); the worker is restarted
each time against the same PostgreSQL database and broker. At the end there are exactly 20,000
cases and 20,000 current results; the test prints the duplicate events absorbed.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    TopicReader,
    connector,
    conversations_csv,
    free_port,
    settings_for,
    sftp_config,
    sftp_session,
    start_service,
    upload,
    wait_for_log,
    write_config,
)

from streams.cases.store import CaseStore
from streams.codec import AvroCodec
from streams.topics import Topics

ROWS = 20_000


def test_sigkill_three_times_during_a_20000_row_file(
    capsys: pytest.CaptureFixture[str],
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    pg_server: PostgresServer,
    tmp_path: Path,
) -> None:
    pg_server.reset()
    crm = connector("crm", sftp_config(sftp_server), interval_seconds=0.5, min_age_seconds=1)
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [crm],
        database_url=pg_server.async_url(),
        processors={"session_timeout_seconds": 6},
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "worker.log"
    topics = Topics(prefix)
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    rng = random.Random()
    # Kill when this many cases are stored, read from the database: the relay publishes results
    # in rounds of up to 2,000, so the results topic can pass a kill point, or reach the end,
    # between two reads.
    kill_points = sorted(rng.sample(range(1_000, ROWS - 2_000), 3))
    port = free_port()
    worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(port)})
    kills = 0
    killed_at: list[int] = []
    try:
        wait_for_log(log, "callstream is running", timeout=120)  # its tables exist
        with sftp_session(sftp_server) as sftp:
            upload(sftp, "exports/20261120_big.csv", conversations_csv(ROWS))
        deadline = time.monotonic() + 600
        while len({r["case_id"] for r in results.records}) < ROWS:
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            assert worker.poll() is None, log.read_text()[-4000:]
            results.poll(0.1)
            if kills == 3:
                continue
            stored = int(pg_server.scalar("SELECT count(*) FROM cases"))
            if stored >= kill_points[kills]:
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                kills += 1
                killed_at.append(stored)
                port = free_port()
                worker = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(port)})
        results.poll(3.0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        results.close()

    async def counts() -> tuple[int, int]:
        async with CaseStore(pg_server.async_url(), AvroCodec(), topics, lambda _t: ()) as store:
            return await store.count_cases("acme"), await store.count_current_results("acme")

    cases, current = asyncio.run(counts())
    keys = [r["idempotency_key"] for r in results.records]
    absorbed = sum(
        float(v) for v in re.findall(rb"callstream_duplicates_absorbed_total\{[^}]*\} (\S+)", body)
    )
    with capsys.disabled():  # the figure belongs in the CI log
        print(
            f"\nSIGKILL after {killed_at} of {ROWS} cases stored; after {kills} SIGKILLs: "
            f"{cases} cases, {current} current results; "
            f"{len(keys)} result events for {len(set(keys))} idempotency keys "
            f"({len(keys) - len(set(keys))} duplicate events); the last worker absorbed "
            f"{absorbed:.0f} redelivered conversations"
        )
    assert kills == 3
    assert all(n < ROWS for n in killed_at), "a kill landed after the file was stored"
    assert cases == ROWS
    assert current == ROWS
    assert len(set(keys)) == ROWS
    assert all(r["result_version"] == 1 for r in results.records)
