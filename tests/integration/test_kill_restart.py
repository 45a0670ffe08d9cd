"""SIGKILL the service while it announces 1,000 files; after a restart none is lost.

The runner publishes a batch, waits for Kafka's acknowledgement and only then records it; a kill
in between re-announces that batch (a duplicate, counted and printed here), never loses a file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from servers.sshd import SftpServer
from support import (
    TopicReader,
    chown_tree,
    connector,
    settings_for,
    sftp_config,
    start_service,
    write_config,
)

from streams.topics import Topics

FILES = 1000


def test_sigkill_while_announcing_loses_no_file(
    capsys: pytest.CaptureFixture[str],
    kafka: str,
    prefix: str,
    sftp_server: SftpServer,
    clean_upload: Path,
    tmp_path: Path,
) -> None:
    folder = clean_upload / "bulk"
    folder.mkdir()
    old = time.time() - 120
    for i in range(FILES):
        f = folder / f"call-{i:04d}.csv"
        f.write_text(f"external_interaction_id\nCALL-{i}\n")
        os.utime(f, (old, old))
    chown_tree(folder, clean_upload)
    bulk = connector("bulk", sftp_config(sftp_server), interval_seconds=0.5)
    settings = settings_for(
        kafka, prefix, tmp_path / "data", [bulk], runner={"announce_batch_size": 10}
    )
    config = write_config(tmp_path / "callstream.yaml", settings)
    log = tmp_path / "service.log"
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    first = start_service(config, log)
    try:
        deadline = time.monotonic() + 90
        while len(reader.records) < 100:
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no announcements: {log.read_text()[-3000:]}"
            reader.poll(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        seen_before_kill = len(reader.records)

        second = start_service(config, log)
        try:
            deadline = time.monotonic() + 120
            while len({r["path"] for r in reader.records}) < FILES:
                assert second.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"{len({r['path'] for r in reader.records})} of {FILES} announced"
                )
                reader.poll(0.3)
            reader.poll(2.0)  # anything still in flight
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
        reader.close()

    paths = [r["path"] for r in reader.records]
    assert set(paths) == {f"bulk/call-{i:04d}.csv" for i in range(FILES)}
    duplicates = len(paths) - FILES
    assert all(r["version"] == 1 for r in reader.records)
    with capsys.disabled():  # the figure belongs in the CI log
        print(
            f"\nkill -9 after {seen_before_kill} events seen; after restart: {len(paths)} "
            f"events for {FILES} files, {duplicates} duplicate(s) (same file_id, absorbed "
            "downstream)"
        )
