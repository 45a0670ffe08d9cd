"""Two tenants against one ``callstream run`` process: what the fairness test and benchmark share.

Tenant ``alpha`` drops bulk exports, tenant ``bravo`` small files, each into its own local
connector's folder (written beside it, then renamed in: a file appears whole). A
:class:`ResultClock` reads the feedback topic in a thread and keeps, per tenant and external
interaction id, the time its first result was produced (the record's Kafka timestamp, set by the
service's producer), so a slow reader never skews a latency.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from support import CODEC, FromStart, connector, settings_for, start_service, write_config

from connectors.local import LocalConfig
from streams.settings import Settings, TenantSettings
from streams.topics import Topics

BULK_TENANT = "alpha"
LIVE_TENANT = "bravo"


def two_tenants(
    kafka: str, prefix: str, work: Path, database_url: str, poll_seconds: float = 1.0
) -> tuple[Settings, dict[str, Path]]:
    """Settings with one local connector per tenant (poll every ``poll_seconds``), and the
    folder each tenant drops its files into."""
    folders = {t: work / "inbox" / t for t in (BULK_TENANT, LIVE_TENANT)}
    tenants = []
    for tenant, folder in folders.items():
        folder.mkdir(parents=True)
        conn = connector(
            "exports", LocalConfig(root=folder), interval_seconds=poll_seconds, min_age_seconds=0
        )
        tenants.append(TenantSettings(id=tenant, connectors=[conn]))
    settings = settings_for(
        kafka, prefix, work / "data", [], database_url=database_url, tenants=tenants
    )
    return settings.model_copy(update={"log_level": "WARNING"}), folders


def drop(folder: Path, name: str, data: bytes) -> float:
    """Write ``data`` beside ``folder`` and rename it in as ``name``; return when it appeared
    (epoch seconds)."""
    staging = folder.parent / f".staging-{uuid.uuid4().hex}"
    staging.write_bytes(data)
    os.replace(staging, folder / name)
    return time.time()


@contextlib.contextmanager
def service_process(settings: Settings, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``callstream run`` with ``settings`` as its own process until the block ends."""
    log = work / "service.log"
    config = write_config(work / "callstream.yaml", settings)
    service = start_service(config, log)
    try:
        deadline = time.monotonic() + 90
        while "callstream is running" not in log.read_text(errors="replace"):
            assert service.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        yield service
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(10)


class ResultClock:
    """Reads the analysis-results topic in a thread: when each conversation's first result was
    produced, per tenant."""

    def __init__(self, kafka: str, prefix: str) -> None:
        self._consumer = FromStart(kafka, Topics(prefix).analysis_results)
        self._lock = threading.Lock()
        self._first: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="result-clock", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.2):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                result = CODEC.decode("callstream.AnalysisResult", value)
                produced = msg.timestamp()[1] / 1000
                with self._lock:
                    seen = self._first.setdefault(result["tenant"], {})
                    ext = result["external_interaction_id"]
                    seen[ext] = min(seen.get(ext, produced), produced)

    def count(self, tenant: str) -> int:
        """Conversations of ``tenant`` with a result so far."""
        with self._lock:
            return len(self._first.get(tenant, {}))

    def times(self, tenant: str) -> dict[str, float]:
        """External interaction id -> when its first result was produced (epoch seconds)."""
        with self._lock:
            return dict(self._first.get(tenant, {}))

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``done()``; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting {what}"
            time.sleep(0.1)

    def close(self) -> None:
        """Stop reading and close the consumer."""
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
