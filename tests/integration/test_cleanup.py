"""Clean-up runs only after downstream reports a file's outcome, and only on that version."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from servers.sshd import SftpServer
from support import (
    TopicReader,
    connector,
    publish,
    running,
    settings_for,
    sftp_config,
    sftp_session,
    upload,
)

from connectors.local import LocalConfig
from streams.topics import Topics


def _outcome(event: dict, outcome: str) -> dict:
    return {
        "file_id": event["file_id"],
        "tenant": event["tenant"],
        "connector": event["connector"],
        "path": event["path"],
        "version_id": event["version_id"],
        "outcome": outcome,
        "rows_accepted": 10,
        "rows_rejected": 0,
        "rejected_by_reason": {},
        "reason": None if outcome == "processed" else "missing_header",
        "decided_at": dt.datetime.now(dt.UTC),
        "lines_read": 11,
    }


async def _until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_cleanup_waits_for_outcome_and_moves_or_deletes(
    kafka: str, prefix: str, sftp_server: SftpServer, clean_upload: Path, tmp_path: Path
) -> None:
    local_root = tmp_path / "inbox"
    local_root.mkdir()
    moving = connector("sftp-move", sftp_config(sftp_server), cleanup="move")
    deleting = connector("local-delete", LocalConfig(root=local_root), cleanup="delete")
    old = time.time() - 60
    with sftp_session(sftp_server) as sftp:
        for name in ("ok.csv", "bad.csv", "replaced.csv"):
            upload(sftp, f"daily/{name}", f"{name}\n".encode(), mtime=old)
    for name in ("gone.csv", "rejected.csv"):
        (local_root / name).write_text(name)
    # The test plays downstream itself: no processors publishing outcomes of their own.
    settings = settings_for(
        kafka, prefix, tmp_path / "data", [moving, deleting], processors={"enabled": False}
    )
    t = Topics(prefix)
    reader = TopicReader(kafka, t.file_arrivals)
    try:
        async with running(settings):
            await reader.wait_for(lambda rs: len(rs) >= 5)
            events = {(r["connector"], r["path"]): r for r in reader.records}
            await asyncio.sleep(1)  # nothing is cleaned before downstream says so
            assert sorted(p.name for p in (clean_upload / "daily").iterdir()) == [
                "bad.csv",
                "ok.csv",
                "replaced.csv",
            ]
            assert (local_root / "gone.csv").exists()

            with sftp_session(sftp_server) as sftp:  # a new version lands before the verdict
                upload(sftp, "daily/replaced.csv", b"second version\n", mtime=time.time() - 30)
            verdicts = [
                (("sftp-move", "daily/ok.csv"), "processed"),
                (("sftp-move", "daily/bad.csv"), "invalid"),
                (("sftp-move", "daily/replaced.csv"), "processed"),
                (("local-delete", "gone.csv"), "processed"),
                (("local-delete", "rejected.csv"), "invalid"),
            ]
            for (conn, path), verdict in verdicts:
                ev = events[(conn, path)]
                publish(
                    kafka,
                    t.file_outcomes,
                    "callstream.FileOutcome",
                    f"acme/{conn}/{path}",
                    _outcome(ev, verdict),
                )
            await _until(lambda: (clean_upload / "processed/daily/ok.csv").exists())
            await _until(lambda: (clean_upload / "invalid/daily/bad.csv").exists())
            await _until(lambda: not (local_root / "gone.csv").exists())
            await _until(lambda: (local_root / "invalid/rejected.csv").exists())
            await reader.wait_for(lambda rs: len(rs) >= 6)  # the replaced file's version 2
            await asyncio.sleep(1)
            await asyncio.to_thread(reader.poll, 0.3)
    finally:
        reader.close()

    assert not (clean_upload / "daily/ok.csv").exists()
    assert (clean_upload / "daily/replaced.csv").read_bytes() == b"second version\n"
    assert not (clean_upload / "processed/daily/replaced.csv").exists()
    late = [r for r in reader.records if r["path"] == "daily/replaced.csv"]
    assert [r["version"] for r in late] == [1, 2]
    # files moved to processed/ or invalid/ are never announced again
    assert not [r for r in reader.records if r["path"].startswith(("processed/", "invalid/"))]
    assert len(reader.records) == 6
