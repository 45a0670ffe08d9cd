"""End-to-end pipeline benchmark: prints figures, asserts nothing about speed.

All on one broker, one run:

1. Python's pipeline limit (not Kafka's: that is test_ingest_bench.py): confluent-kafka
   producing and consuming the same Avro Conversation records (encode, produce, consume,
   decode; producer and consumer running concurrently);
2. end-to-end conversations per second for a 100,000-row CSV (the size of the file the
   6,000 /s target was set on; ``CALLSTREAM_PIPELINE_BENCH_ROWS``), from the end of its SFTP
   upload to the last result on the feedback topic, with the service running as its own
   process (as in production) against PostgreSQL, and a stage breakdown, the CPU seconds each
   process (workers, PostgreSQL, the broker, sshd) used, plus a py-spy profile of each worker;
   then the same with two worker processes: the second runs the processors only
   (``roles: [processors]``, same config, Kafka and database: it joins the processors' group).
   The timed runs have no profiler attached (py-spy took about 5 % of the two cores); a third,
   shorter run of two workers under py-spy gives the profile;
3. p50 / p99 latency from upload to result for single small files with a 1 s poll (one worker).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from report import Area, CpuByProcess, p50_p99, profile_summary, target
from servers.postgres import PostgresServer
from servers.sshd import SftpServer
from support import (
    CODEC,
    TopicReader,
    arrival_topics,
    connector,
    conversations_csv,
    settings_for,
    sftp_config,
    sftp_session,
    start_service,
    upload,
    write_config,
)

from streams.ingest.parse import ParseSettings
from streams.topics import Topics, ensure_topics

ROWS = int(os.environ.get("CALLSTREAM_PIPELINE_BENCH_ROWS", "100000"))
RAW = ROWS
#: py-spy's sampling rate: enough samples for the shares, little CPU taken from the two cores
#: the service is timed on (at 50 Hz the two samplers took about 14 % of one core).
SPY_HZ = 25
SMALL_FILES = 30


def _conversation(i: int) -> dict[str, Any]:
    start = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    return {
        "tenant": "acme",
        "source_system": "bench",
        "external_interaction_id": f"CALL-{i:06d}",
        "channel": "voice",
        "direction": "inbound",
        "started_at": start,
        "ended_at": start + dt.timedelta(seconds=45),
        "agent_id": f"a-{i % 17}",
        "agent_name": f"Agent {i % 17}",
        "team": "Billing",
        "campaign": "winter",
        "ani": "+14155550100",
        "dnis": "+18005550100",
        "recording_ref": f"recordings/{i:06d}.wav",
        "transcript_ref": None,
        "turns": [],
        "metadata": {"disposition": "resolved"},
        "source": None,
    }


def raw_limit(kafka: str, topic: str) -> dict[str, float]:
    """Encode+produce and consume+decode the same records concurrently; return rates."""
    admin = AdminClient({"bootstrap.servers": kafka})
    ensure_topics(admin, [topic], 6, 1)
    consumed = 0
    done = threading.Event()
    first_seen: list[float] = []

    def consume() -> None:
        nonlocal consumed
        c = Consumer(
            {
                "bootstrap.servers": kafka,
                "group.id": f"raw-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe([topic])
        while consumed < RAW + 1:
            for msg in c.consume(1000, 0.5):
                if msg.error() is None:
                    CODEC.decode("callstream.Conversation", msg.value())
                    consumed += 1
                    if not first_seen:
                        first_seen.append(time.perf_counter())
        done.set()
        c.close()

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(3)  # let the consumer join its group before the clock starts
    p = Producer(
        {
            "bootstrap.servers": kafka,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
        }
    )
    p.produce(
        topic, key=b"warm-up", value=CODEC.encode("callstream.Conversation", _conversation(-1))
    )
    p.flush(60)  # the idempotent producer's id is fetched before the clock starts
    t0 = time.perf_counter()
    for i in range(RAW):
        value = CODEC.encode("callstream.Conversation", _conversation(i))
        while True:
            try:
                p.produce(topic, key=f"acme/bench/CALL-{i}".encode(), value=value)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(60)
    produced_s = time.perf_counter() - t0
    done.wait(120)
    total_s = time.perf_counter() - t0
    reader.join()
    return {
        "produce_per_s": RAW / produced_s,
        "pipeline_per_s": RAW / total_s,
        "seconds": total_s,
    }


#: Profile areas: a sample counts in the first whose needles all occur in its stack.
_AREAS: tuple[Area, ...] = (
    ("SFTP read + parse (connectors, streams.ingest)", ("streams/ingest/",)),
    ("outbox relay (claim, publish, delete)", ("publish_once",)),
    ("cases: decode conversations", ("streams/agents/cases.py", "AvroCodec.decode")),
    ("cases: analysis (scoring)", ("streams/cases/", "streams/analysis/")),
    ("cases: Avro encode of events + results", ("streams/cases/", "AvroCodec.encode")),
    ("cases: SQL (asyncpg, SQLAlchemy)", ("streams/cases/", "sqlalchemy")),
    ("cases: SQL (asyncpg, SQLAlchemy)", ("streams/cases/", "asyncpg")),
    ("cases: plan (hashing, JSON, rows)", ("streams/cases/",)),
    ("Faust/aiokafka consuming", ("aiokafka",)),
    ("Avro encode/decode (other)", ("fastavro",)),
    ("connector polling", ("connectors/poller",)),
)


def _profile_summary(raw: Path) -> list[str]:
    """Summarise the service process's py-spy profile by pipeline area."""
    return profile_summary(raw, _AREAS, other="other (event loop, idle, logging)", top=12)


@dataclass
class BulkRun:
    """What one file -> results run measured."""

    workers: int
    rows: int
    megabytes: float
    upload_s: float
    seconds: float  # upload done -> last result
    announced_s: float  # upload done -> file announced
    parsed_s: float  # announced -> rows parsed and published
    first_result_s: float  # upload done -> first result read
    profiled: bool  # py-spy sampled the workers (not a timed run)
    profiles: list[list[str]] = field(default_factory=list)
    cpu: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)  # per worker: mean case-store batch

    @property
    def per_s(self) -> float:
        """File -> results conversations per second."""
        return self.rows / self.seconds

    @property
    def results_per_s(self) -> float:
        """Conversations -> results per second, from the first result to the last."""
        return self.rows / max(self.seconds - self.first_result_s, 1e-9)


def _wait_running(service: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "callstream is running" not in log.read_text(errors="replace"):
        assert service.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


_METRICS_URL = re.compile(r"metrics at (http://\S+/metrics)")


def _mean_batch(log: Path) -> str:
    """A worker's mean conversations per case-store batch (both lanes), from its /metrics."""
    found = _METRICS_URL.search(log.read_text(errors="replace"))
    if found is None:
        return "no metrics address in the log"
    with urllib.request.urlopen(found.group(1), timeout=10) as answer:  # noqa: S310 - loopback
        text = answer.read().decode()
    sums = counts = 0.0
    for line in text.splitlines():
        if line.startswith("callstream_case_batch_records_sum"):
            sums += float(line.rsplit(" ", 1)[1])
        elif line.startswith("callstream_case_batch_records_count"):
            counts += float(line.rsplit(" ", 1)[1])
    return f"{sums / counts:,.0f} in {counts:,.0f} batches" if counts else "no batch"


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(SPY_HZ),
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def file_to_results(
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    pg_server: PostgresServer,
    tmp_path: Path,
    *,
    workers: int,
    rows: int = ROWS,
    small_files: int = 0,
    profiled: bool = False,
) -> BulkRun:
    """Upload one ``rows``-row CSV to a fresh service of ``workers`` processes (the first with
    the connector, the others processors only) and time it to the last result; then, when
    ``small_files``, time single-row files from upload to result one at a time. ``profiled``:
    py-spy samples every worker meanwhile (its CPU is then taken from the timed cores)."""
    pg_server.reset()
    folder = f"w{workers}{'p' if profiled else ''}"
    with sftp_session(sftp_server) as sftp:
        sftp.mkdir(f"/upload/{folder}")
    root = f"{sftp_server.remote_upload_dir()}/{folder}"
    crm = connector(
        "crm", sftp_config(sftp_server, root=root), interval_seconds=1, min_age_seconds=0
    )
    crm = crm.model_copy(update={"ingest": ParseSettings(source_system="bench")})
    run_dir = tmp_path / folder
    run_dir.mkdir()
    configs = []
    for n in range(workers):
        settings = settings_for(
            kafka,
            prefix,
            run_dir / f"data{n}",
            [crm],
            database_url=pg_server.async_url(),
            kafka={"partitions": 6},
            roles=["connectors", "processors", "api"] if n == 0 else ["processors"],
        )
        configs.append(
            write_config(
                run_dir / f"callstream{n}.yaml",
                settings.model_copy(update={"log_level": "WARNING"}),
            )
        )
    logs = [run_dir / f"service{n}.log" for n in range(workers)]
    topics = Topics(prefix)
    services: list[subprocess.Popen[bytes]] = []
    spies: list[subprocess.Popen[bytes]] = []
    results = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    arrivals = TopicReader(kafka, arrival_topics(prefix))
    outcomes = TopicReader(kafka, topics.file_outcomes, "callstream.FileOutcome")
    profiles = [run_dir / f"profile{n}.txt" for n in range(workers)]
    latencies: list[float] = []
    try:
        for config, log in zip(configs, logs, strict=True):
            services.append(start_service(config, log))
            _wait_running(services[-1], log)
        time.sleep(3 if workers > 1 else 0)  # the group rebalances over both processes
        data = conversations_csv(rows)
        if profiled:
            spies = [_spy(s.pid, out) for s, out in zip(services, profiles, strict=True)]
        cpu = CpuByProcess({f"callstream worker {n + 1}": [s.pid] for n, s in enumerate(services)})
        cpu.start()
        u0 = time.perf_counter()
        with sftp_session(sftp_server) as sftp:
            upload(sftp, f"{folder}/20261120_bulk.csv", data)
        t0 = time.perf_counter()
        wall0 = dt.datetime.now(dt.UTC)
        first = None
        deadline = time.monotonic() + 900
        while results.count < rows:
            alive = all(s.poll() is None for s in services)
            assert alive and time.monotonic() < deadline, logs[0].read_text()[-3000:]
            if results.keep(0.2) and first is None:
                first = time.perf_counter()
        t1 = time.perf_counter()
        cpu_lines = cpu.lines(rows, "conversations")
        batches = [_mean_batch(log) for log in logs]
        results.decode_kept()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(60)
        arrivals.poll(1)
        outcomes.poll(1)
        announced = arrivals.records[0]["announced_at"]
        decided = outcomes.records[0]["decided_at"]
        for i in range(small_files):
            one = conversations_csv(1, start=900_000 + i)
            with sftp_session(sftp_server) as sftp:
                upload(sftp, f"{folder}/single/{i}.csv", one)
            s0 = time.perf_counter()
            ext = f"CALL-{900_000 + i:06d}"
            while not any(r["external_interaction_id"] == ext for r in results.records[-5:]):
                assert time.perf_counter() - s0 < 60, logs[0].read_text()[-3000:]
                results.poll(0.02)
            latencies.append(time.perf_counter() - s0)
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
        for service in services:
            service.send_signal(signal.SIGTERM)
        for service in services:
            service.wait(60)
        for reader in (results, arrivals, outcomes):
            reader.close()
    assert len({r["case_id"] for r in results.records}) == rows + small_files
    return BulkRun(
        workers=workers,
        rows=rows,
        profiled=profiled,
        megabytes=len(data) / 1e6,
        upload_s=t0 - u0,
        seconds=t1 - t0,
        announced_s=(announced - wall0).total_seconds(),
        parsed_s=(decided - announced).total_seconds(),
        first_result_s=(first or t1) - t0,
        profiles=[
            _profile_summary(p) if p.exists() else ["  (no profile written)"] for p in profiles
        ]
        if profiled
        else [],
        cpu=cpu_lines,
        latencies=latencies,
        batches=batches,
    )


def _run_lines(run: BulkRun) -> list[str]:
    processes = "1 worker process" if run.workers == 1 else f"{run.workers} worker processes"
    last = run.seconds - run.announced_s - run.parsed_s
    how = f"under py-spy ({SPY_HZ} Hz), for the profile" if run.profiled else "no profiler"
    lines = [
        f"file -> results, {processes}, {run.rows:,}-row CSV ({run.megabytes:.1f} MB), "
        f"upload took {run.upload_s:.1f} s, {how}:",
        f"  upload done -> last result on feedback     {run.seconds:>10.1f} s",
        f"  file -> results conversations per second   {run.per_s:>10,.0f} /s"
        + (
            f"   {target('>= 6,000 /s with 2 workers', run.per_s >= 6_000)}"
            if run.workers == 2 and not run.profiled
            else ""
        ),
        f"  conversations -> results (first to last)   {run.results_per_s:>10,.0f} /s",
        "  stages (from event timestamps):",
        f"    upload done -> file announced      {run.announced_s:>8.1f} s",
        f"    announced -> rows parsed+published {run.parsed_s:>8.1f} s",
        f"    upload done -> first result        {run.first_result_s:>8.1f} s",
        f"    parsed -> last result published    {last:>8.1f} s",
        *(
            f"    conversations per case-store batch, worker {n + 1}: {mean}"
            for n, mean in enumerate(run.batches)
        ),
        *run.cpu,
    ]
    for n, summary in enumerate(run.profiles):
        role = "connectors + processors" if n == 0 else "processors only"
        lines.append(f"  where worker {n + 1} ({role}) spends its time (py-spy, {SPY_HZ} Hz):")
        lines += summary
    return lines


@pytest.mark.benchmark
def test_pipeline_benchmark(
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    pg_server: PostgresServer,
    tmp_path: Path,
) -> None:
    raw = raw_limit(kafka, f"{prefix}.raw-limit")
    one = file_to_results(
        kafka, f"{prefix}-w1", sftp_server, pg_server, tmp_path, workers=1, small_files=SMALL_FILES
    )
    two = file_to_results(kafka, f"{prefix}-w2", sftp_server, pg_server, tmp_path, workers=2)
    spied = file_to_results(
        kafka,
        f"{prefix}-w2p",
        sftp_server,
        pg_server,
        tmp_path,
        workers=2,
        rows=max(ROWS // 2, 1),
        profiled=True,
    )
    p50, p99 = p50_p99(one.latencies)
    lines = [
        "",
        "callstream pipeline benchmark (one broker, 2 cores, PostgreSQL, OpenSSH sftp on loopback)",
        f"Python pipeline limit (encode + produce + consume + decode; Kafka's own limit: "
        f"test_ingest_bench.py), {RAW:,} Conversation records:",
        f"  produce (encode + send, idempotent, lz4)   {raw['produce_per_s']:>10,.0f} rec/s",
        f"  produce -> consume pipeline (+ decode)     {raw['pipeline_per_s']:>10,.0f} rec/s",
        *_run_lines(one),
        *_run_lines(two),
        f"  2 processes / 1 process                    {two.per_s / one.per_s:>10.2f} x",
        *_run_lines(spied),
        f"single small files, 1 s poll, {SMALL_FILES} files, upload -> result (1 worker):",
        f"  p50 {p50:.2f} s   p99 {p99:.2f} s   min {min(one.latencies):.2f} s   "
        f"max {max(one.latencies):.2f} s",
    ]
    print("\n".join(lines))
