"""The speed peer of the file -> topic stage: Kafka Connect 3.9.1 standalone + FilePulse 2.18.0.

Contract: :func:`run_peer` starts Apache Kafka Connect (standalone, its own JVM) with the
FilePulse source connector watching an empty local folder, waits until the connector and its
task are RUNNING, renames a CSV into the folder (the clock starts) and stops the clock when the
end offsets of the target topic (6 partitions, created here) sum to the file's row count. It
returns rows/s, seconds, the JVM's peak RSS and CPU seconds, and stops the JVM.

The plugin jar (FilePulse's own v2.18.0 sources compiled for Java 11+; the plugin module is not
on Maven Central), the two poms and the licence are in ``tests/benchmarks/peer/``: the Connect
runtime and the plugin's third-party jars come from Maven Central with
``mvn dependency:copy-dependencies``
(cached in ``~/.m2`` and ``~/.cache/callstream/peer-filepulse``). A missing ``mvn`` or ``java``,
or a Connect that does not come up, fails the benchmark with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.topics import ensure_topics

PEER = Path(__file__).resolve().parent / "peer"
PLUGIN_JAR = "kafka-connect-filepulse-2.18.0-peerbuild.jar"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "callstream"
HOME = CACHE / "peer-filepulse-2.18.0-connect-3.9.1"
PARTITIONS = 6
CONNECTOR = "filepulse-csv"


def _fetch(pom: str, target: Path) -> None:
    """Copy a pom's dependencies into ``target`` (atomically: a staging folder renamed)."""
    if (target / ".complete").exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"'mvn' is not on PATH: needed to fetch the peer's jars ({pom})")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    cmd = [mvn, "-q", "-B", "-f", str(PEER / pom), "dependency:copy-dependencies"]
    result = subprocess.run(
        [*cmd, f"-DoutputDirectory={staging}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"Maven fetch failed: {' '.join(cmd)}\n{result.stdout[-3000:]}")
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def ensure_peer() -> tuple[Path, Path]:
    """Return (Connect libs folder, plugin.path folder), fetching what is missing."""
    libs = HOME / "connect-libs"
    plugins = HOME / "plugins"
    _fetch("connect-runtime.pom.xml", libs)
    _fetch("plugin-deps.pom.xml", plugins / "filepulse")
    shutil.copy2(PEER / PLUGIN_JAR, plugins / "filepulse" / PLUGIN_JAR)
    return libs, plugins


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{port}/connectors/{CONNECTOR}/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            status: dict[str, Any] = json.loads(answer.read())
            return status
    except (OSError, ValueError):
        return None


def end_offsets(consumer: Consumer, topic: str, partitions: int) -> int:
    """Sum of the end offsets of ``topic``'s partitions (records on it, idempotent producer)."""
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    )


def _proc_figures(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a running process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm / 1024, (int(fields[11]) + int(fields[12])) / ticks


def run_peer(kafka: str, prefix: str, csv: bytes, rows: int, work: Path) -> dict[str, float]:
    """Run the peer once over ``csv`` (``rows`` data rows); see the module doc."""
    libs, plugins = ensure_peer()
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("'java' is not on PATH: needed to run Kafka Connect")
    topic = f"{prefix}.peer-filepulse"
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), [topic], PARTITIONS, 1)
    inbox, staging = work / "inbox", work / "staging"
    inbox.mkdir(parents=True)
    staging.mkdir()
    port = _free_port()
    worker = {
        "bootstrap.servers": kafka,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(work / "connect.offsets"),
        "offset.flush.interval.ms": "10000",
        "plugin.path": str(plugins),
        "listeners": f"http://127.0.0.1:{port}",
        "producer.enable.idempotence": "true",
    }
    fp = "io.streamthoughts.kafka.connect.filepulse"
    connector = {
        "name": CONNECTOR,
        "connector.class": f"{fp}.source.FilePulseSourceConnector",
        "tasks.max": "1",
        "topic": topic,
        "fs.listing.class": f"{fp}.fs.LocalFSDirectoryListing",
        "fs.listing.directory.path": str(inbox),
        "fs.listing.recursive.enabled": "false",
        "fs.listing.interval.ms": "1000",
        "fs.listing.filters": f"{fp}.fs.filter.RegexFileListFilter",
        "file.filter.regex.pattern": r".*\\.csv$",
        "fs.cleanup.policy.class": f"{fp}.fs.clean.LogCleanupPolicy",
        "tasks.reader.class": f"{fp}.fs.reader.LocalRowFileInputReader",
        "skip.headers": "1",
        "filters": "ParseCSV",
        "filters.ParseCSV.type": f"{fp}.filter.CSVFilter",
        "filters.ParseCSV.extract.column.name": "headers",
        "filters.ParseCSV.trim.column": "true",
        "filters.ParseCSV.separator": ",",
        "offset.attributes.string": "name+hash",
        "tasks.file.status.storage.bootstrap.servers": kafka,
        "tasks.file.status.storage.topic": f"{prefix}.connect-file-pulse-status",
        "tasks.file.status.storage.topic.partitions": "1",
        "tasks.file.status.storage.topic.replication.factor": "1",
    }
    for name, props in (("worker", worker), ("filepulse", connector)):
        (work / f"{name}.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    log = work / "connect.log"
    with log.open("wb") as out:
        jvm = subprocess.Popen(
            [
                java,
                "-Xmx2G",
                f"-Dlog4j.configuration=file:{PEER / 'connect-log4j.properties'}",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.connect.cli.ConnectStandalone",
                str(work / "worker.properties"),
                str(work / "filepulse.properties"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{prefix}-peer-offsets"})
    try:
        deadline = time.monotonic() + 180
        while True:
            if jvm.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Kafka Connect did not start:\n{log.read_text()[-4000:]}")
            status = _status(port)
            if (
                status
                and status["connector"]["state"] == "RUNNING"
                and status["tasks"]
                and all(t["state"] == "RUNNING" for t in status["tasks"])
            ):
                break
            time.sleep(0.2)
        cpu0 = _proc_figures(jvm.pid)[1]
        (staging / "export.csv").write_bytes(csv)
        t0 = time.perf_counter()
        os.rename(staging / "export.csv", inbox / "export.csv")
        deadline = time.monotonic() + 900
        while end_offsets(consumer, topic, PARTITIONS) < rows:
            if jvm.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the peer stalled:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        rss, cpu1 = _proc_figures(jvm.pid)
    finally:
        consumer.close()
        jvm.terminate()
        try:
            jvm.wait(30)
        except subprocess.TimeoutExpired:
            jvm.kill()
            jvm.wait(10)
    return {
        "rows_per_s": rows / seconds,
        "seconds": seconds,
        "rss_mib": rss,
        "cpu_s": cpu1 - cpu0,
    }
