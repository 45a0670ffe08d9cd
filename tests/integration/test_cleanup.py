"""Clean-up runs only after downstream reports a file's outcome, and only on that version."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
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
from connectors.poller import CleanupStage
from streams.state import ConnectorState
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
        "lines_read": 0,
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


def _verdict(kafka: str, prefix: str, event: dict, outcome: str) -> None:
    publish(
        kafka,
        Topics(prefix).file_outcomes,
        "callstream.FileOutcome",
        f"{event['tenant']}/{event['connector']}/{event['path']}",
        _outcome(event, outcome),
    )


async def test_pending_settling_and_recheck_clean_ups_survive_a_restart(
    kafka: str, prefix: str, tmp_path: Path
) -> None:
    """Stop the service with a move pending, a moved file settling and an incomplete file
    waiting for its grace period: the next start carries on with each from the database."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    now = time.time()
    for name, age in (("pending.csv", 60), ("settling.csv", 60), ("recheck.csv", 5)):
        (inbox / name).write_text(f"{name}\n")
        os.utime(inbox / name, (now - age, now - age))
    local = connector(
        "local",
        LocalConfig(root=inbox),
        cleanup="move",
        min_age_seconds=4,
        cleanup_settle_seconds=600,
        incomplete_grace_seconds=20,  # recheck.csv: due 15 s from now, after the restart
    )
    settings = settings_for(
        kafka, prefix, tmp_path / "data", [local], processors={"enabled": False}
    )
    reader = TopicReader(kafka, Topics(prefix).file_arrivals)
    state = ConnectorState(settings.database_url)
    try:
        async with running(settings):
            await reader.wait_for(lambda rs: len(rs) >= 3)
            first = {r["path"]: r for r in reader.records}
            _verdict(kafka, prefix, first["settling.csv"], "processed")
            _verdict(kafka, prefix, first["recheck.csv"], "incomplete")
            await _until(lambda: (inbox / "processed/settling.csv").exists())
            _verdict(kafka, prefix, first["pending.csv"], "partial")
            await state.start()
            stages: dict[str, object] = {}
            deadline = time.monotonic() + 20
            while stages.get("pending.csv") != CleanupStage.PENDING:
                assert time.monotonic() < deadline, f"verdict not recorded: {stages}"
                await asyncio.sleep(0.1)
                known = await state.load_known("acme", "local")
                stages = {path: k.stage for path, k in known.items()}
        # stopped within the 4 s quiet period of pending.csv
        assert stages == {
            "pending.csv": CleanupStage.PENDING,
            "settling.csv": CleanupStage.SETTLING,
            "recheck.csv": CleanupStage.RECHECK,
        }
        assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
            "pending.csv",
            "recheck.csv",
        ]
        with (inbox / "processed/settling.csv").open("a") as late_writer:
            late_writer.write("written after the move\n")  # a writer that resumed meanwhile
        os.utime(inbox / "processed/settling.csv", (now - 30, now - 30))

        async with running(settings):
            await _until(lambda: (inbox / "invalid/pending.csv").exists())
            await _until(lambda: (inbox / "settling.csv").exists())
            await reader.wait_for(
                lambda rs: (
                    [r["path"] for r in rs].count("settling.csv") >= 2
                    and [r["path"] for r in rs].count("recheck.csv") >= 2
                ),
                timeout=40,
            )
    finally:
        reader.close()
        await state.stop()

    by_path: dict[str, list[dict]] = {}
    for r in reader.records:
        by_path.setdefault(r["path"], []).append(r)
    settling_v1, settling_v2 = by_path["settling.csv"]
    assert (settling_v1["version"], settling_v2["version"]) == (1, 2)
    assert settling_v2["size"] > settling_v1["size"]
    assert (inbox / "settling.csv").read_text().endswith("written after the move\n")
    recheck_v1, recheck_again = by_path["recheck.csv"]
    assert recheck_again["file_id"] == recheck_v1["file_id"]  # the same, unchanged version
    assert (recheck_again["version"], recheck_again["version_id"]) == (1, recheck_v1["version_id"])
    assert recheck_again["announced_at"] >= recheck_v1["mtime"] + dt.timedelta(seconds=20)
    assert len(by_path["pending.csv"]) == 1
    assert (inbox / "recheck.csv").exists()
