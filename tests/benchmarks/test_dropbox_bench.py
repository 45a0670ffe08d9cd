"""Drop-box latency: an upload's close to its analysis result on the feedback topic.

Run explicitly; the table goes to stdout, nothing about speed is asserted (only that every
upload got its result)::

    .venv/bin/pytest tests/benchmarks/test_dropbox_bench.py -s -q -p no:cacheprovider -m benchmark

The whole service runs in this process (embedded defaults but the session's Kafka), with the
drop box on and one account on a local connector that polls only every 30 s: every
announcement comes from the drop box waking the connector at close. UPLOADS small CSV files
(one conversation each) go up one after another through paramiko (host key pinned); for each,
the latency is from the moment the client starts closing the file to the moment the
conversation's result is read from ``<prefix>.analysis-results.v1``, and, inside that, to the
``announced_at`` of its file arrival.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from dropbox_support import new_login, paramiko_session
from report import print_table
from support import TopicReader, conversations_csv, running, settings_for, unique_prefix

from streams.topics import Topics

pytestmark = pytest.mark.benchmark

UPLOADS = 50


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def test_upload_close_to_result(kafka: str, tmp_path: Path) -> None:
    prefix = unique_prefix()
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [],
        api={"operator_token": OPERATOR_TOKEN},
        dropbox={"enabled": True, "port": 0},
        processors={"batch_within_seconds": 0.05, "commit_interval_seconds": 0.2},
    )
    topics = Topics(prefix)
    arrivals = TopicReader(kafka, topics.file_arrivals)
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    async with running(settings) as service, ApiClient(service.http_url or "") as client:
        api = client.as_(await new_tenant(client.as_(OPERATOR_TOKEN), "bench"))
        login = await new_login(
            api,
            settings.data_dir,
            "bench",
            "bench-up",
            tmp_path,
            poll={"interval_seconds": 30, "min_age_seconds": 20},
        )
        while ("bench", "bench-up") not in service.runner.contexts:
            await asyncio.sleep(0.1)
        transport, sftp = await asyncio.to_thread(paramiko_session, service, login)
        closed: dict[str, float] = {}
        to_result: list[float] = []
        to_announce: list[float] = []
        started = time.monotonic()
        try:
            for i in range(UPLOADS):
                ext = f"CALL-{900_000 + i:06d}"

                def put(i: int = i, ext: str = ext) -> None:
                    with sftp.open(f"data/bench-{i:03d}.csv", "wb") as f:
                        f.write(conversations_csv(1, start=900_000 + i))
                        closed[ext] = time.time()

                await asyncio.to_thread(put)
                deadline = time.monotonic() + 30
                while not any(r["external_interaction_id"] == ext for r in results.records):
                    assert time.monotonic() < deadline, f"no result for {ext}"
                    await asyncio.to_thread(results.poll, 0.02)  # reads in 20 ms steps
                got = time.time()
                to_result.append(got - closed[ext])
        finally:
            transport.close()
        elapsed = time.monotonic() - started
        await arrivals.wait_for(lambda rs: len(rs) >= UPLOADS)
        for r in arrivals.records:
            name = r["path"].rsplit("/", 1)[-1]
            ext = f"CALL-{900_000 + int(name[6:9]):06d}"
            to_announce.append(r["announced_at"].timestamp() - closed[ext])
    arrivals.close()
    results.close()
    assert len(to_result) == UPLOADS and len(to_announce) == UPLOADS
    ms = 1000.0
    print_table(
        f"drop box: {UPLOADS} uploads (1-row CSV, paramiko, loopback) in {elapsed:.1f}s",
        ["latency", "p50 ms", "p99 ms", "max ms", "mean ms"],
        [
            [
                label,
                f"{_pct(v, 50) * ms:.0f}",
                f"{_pct(v, 99) * ms:.0f}",
                f"{max(v) * ms:.0f}",
                f"{statistics.mean(v) * ms:.0f}",
            ]
            for label, v in (
                ("close -> announced", to_announce),
                ("close -> result read", to_result),
            )
        ],
        [
            "announced: the file-arrival event's announced_at (the connector was woken by the "
            "close; its own poll interval is 30 s)",
            "result read: this test's consumer read the conversation's analysis result "
            "(polled in 20 ms steps)",
        ],
    )
