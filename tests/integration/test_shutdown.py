"""SIGTERM stops ``callstream run`` within shutdown_grace_seconds, even when Kafka is gone.

The service runs as its own process against a broker of this test's own, which is stopped
under it while a file is in flight: the connector runner and the stream processors are then
retrying against nothing, and Faust would wait for ever for its in-flight event. The time bound
is the requirement itself, so it is asserted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from support import (
    connector,
    conversations_csv,
    settings_for,
    start_service,
    wait_for_log,
    write_config,
)

from connectors.local import LocalConfig
from streams.embedded.kafka import LocalKafka

GRACE = 6.0
MARGIN = 4.0  # interpreter exit and process reaping, well under the grace period itself


def test_sigterm_stops_within_the_grace_period_when_the_broker_is_gone(
    tmp_path: Path, prefix: str
) -> None:
    broker = LocalKafka(tmp_path / "kafka")
    broker.start(timeout=120)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        tmp_path / "data",
        [connector("drop", LocalConfig(root=inbox))],
        shutdown_grace_seconds=GRACE,
    )
    log = tmp_path / "service.log"
    proc = start_service(write_config(tmp_path / "callstream.yaml", settings), log)
    try:
        wait_for_log(log, "callstream is running", 120)
        (inbox / "calls.csv").write_bytes(conversations_csv(200))
        wait_for_log(log, "calls.csv: processed", 60)
        broker.stop()  # the broker is gone for good
        (inbox / "more.csv").write_bytes(conversations_csv(200, start=200))
        time.sleep(5)  # the runner now retries its announcement against nothing
        assert proc.poll() is None, log.read_text()[-4000:]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=GRACE + 60)
        elapsed = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
    text = log.read_text()
    print(f"stopped {elapsed:.1f}s after SIGTERM (grace {GRACE:.0f}s), exit {proc.returncode}")
    assert elapsed <= GRACE + MARGIN, text[-4000:]
    if proc.returncode != 0:  # parts abandoned: named, and the exit status says so
        assert proc.returncode == 1, text[-4000:]
        assert "did not stop within" in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
