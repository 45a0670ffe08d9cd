"""SIGKILL the service while it announces 1,000 files; after a restart none is lost.

The runner publishes a batch, waits for Kafka's acknowledgement and only then records it; a kill
in between re-announces that batch (a duplicate, counted and printed here), never loses a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from servers.sshd import SftpServer
from support import TopicReader, chown_tree

from streams.topics import Topics

FILES = 1000


def _write_config(path: Path, kafka: str, prefix: str, sftp_server: SftpServer) -> None:
    user = sftp_server.users["cs_pw"]
    config = {
        "data_dir": str(path.parent / "data"),
        "kafka": {"bootstrap_servers": kafka, "topic_prefix": prefix},
        "http": {"port": 0},
        "runner": {"announce_batch_size": 10},
        "tenants": [
            {
                "id": "acme",
                "connectors": [
                    {
                        "name": "bulk",
                        "store": {
                            "type": "sftp",
                            "host": sftp_server.host,
                            "port": sftp_server.port,
                            "username": "cs_pw",
                            "password": user.password,
                            "host_key": sftp_server.host_key_line,
                            "root": "/upload",
                        },
                        "poll": {"interval_seconds": 0.5, "min_age_seconds": 0},
                    }
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "--config", str(config), "run", "--no-echo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


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
    config = tmp_path / "callstream.yaml"
    _write_config(config, kafka, prefix, sftp_server)
    log = tmp_path / "service.log"
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    first = _start(config, log)
    try:
        deadline = time.monotonic() + 90
        while len(reader.records) < 100:
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no announcements: {log.read_text()[-3000:]}"
            reader.poll(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        seen_before_kill = len(reader.records)

        second = _start(config, log)
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
