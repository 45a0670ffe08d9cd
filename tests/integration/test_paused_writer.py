"""A writer that pauses mid-upload loses nothing (issue 6).

The writer keeps its file open and pauses three times longer than ``min_age_seconds``: once in
the middle of a row (the last line unterminated) and once between rows. Each pause is long
enough for the connector to announce the part written so far and for clean-up to be due. The
whole service runs (processors on, ``cleanup: move``), over SFTP and over a local folder: every
row must become a case, and the complete file must end in ``processed/`` with nothing left in
the inbox and no clean-up pending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers.sshd import SftpServer
from support import (
    CSV_HEADER,
    connector,
    conversation_row,
    running,
    settings_for,
    sftp_config,
    sftp_session,
)

from connectors.local import LocalConfig
from connectors.sftp import SftpConfig
from streams.service import Service
from streams.state import ConnectorState

MIN_AGE = 1.0
PAUSE = 3 * MIN_AGE
ROWS = 60
NAME = "exports/calls.csv"


@pytest.fixture(params=["sftp", "local"])
def inbox(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Path, SftpConfig | LocalConfig, Callable[[], Any]]]:
    """(the inbox on disk, the connector's store, a factory opening the writer's session)."""
    if request.param == "local":
        root = tmp_path / "inbox"
        (root / "exports").mkdir(parents=True)
        yield root, LocalConfig(root=root), lambda: LocalWriter(root / NAME)
        return
    server: SftpServer = request.getfixturevalue("sftp_server")
    upload: Path = request.getfixturevalue("clean_upload")
    with sftp_session(server) as sftp:
        sftp.mkdir("/upload/exports")
    yield upload, sftp_config(server), lambda: SftpWriter(server)


class LocalWriter:
    """A client writing into a local file it keeps open."""

    def __init__(self, path: Path) -> None:
        self._file: BinaryIO = path.open("wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class SftpWriter:
    """An SFTP client uploading into a remote file it keeps open (one handle, like a client)."""

    def __init__(self, server: SftpServer) -> None:
        self._session = sftp_session(server)
        sftp = self._session.__enter__()
        self._file = sftp.open(f"/upload/{NAME}", "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self._session.__exit__(None, None, None)


def _cleanup_counts(service: Service) -> dict[str, float]:
    """callstream_connector_cleanups_total by action, from the service's own registry."""
    text = generate_latest(service.metrics.registry).decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "callstream_connector_cleanups":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["action"]] = sample.value
    return counts


async def test_a_writer_pausing_mid_row_and_between_rows_loses_no_row(
    kafka: str,
    prefix: str,
    tmp_path: Path,
    inbox: tuple[Path, SftpConfig | LocalConfig, Callable[[], Any]],
) -> None:
    root, store, open_writer = inbox
    rows = [conversation_row(i).encode() for i in range(ROWS)]
    mid_row = len(rows[20]) // 2
    parts = [
        CSV_HEADER.encode() + b"".join(rows[:20]) + rows[20][:mid_row],  # pause mid-row
        rows[20][mid_row:] + b"".join(rows[21:40]),  # pause between rows
        b"".join(rows[40:]),
    ]
    conn = connector(
        "drop",
        store,
        cleanup="move",
        min_age_seconds=MIN_AGE,
        incomplete_grace_seconds=10 * PAUSE,  # the mid-row pause is shorter than the grace
    )
    settings = settings_for(kafka, prefix, tmp_path / "data", [conn])
    state = ConnectorState(settings.database_url)
    async with running(settings) as service:
        writer = await asyncio.to_thread(open_writer)
        try:
            for i, part in enumerate(parts):
                await asyncio.to_thread(writer.write, part)
                if i < len(parts) - 1:
                    await asyncio.sleep(PAUSE)  # the link stalls; the handle stays open
        finally:
            await asyncio.to_thread(writer.close)

        await state.start()
        try:
            done = await _until_settled(service, state, root, b"".join(parts))
        finally:
            await state.stop()
        cases = await service.cases.count_cases("acme")
        actions = _cleanup_counts(service)
    print(f"\npaused writer over {store.type}: clean-up actions {actions}")
    assert done, f"clean-up did not finish: {actions}"
    assert cases == ROWS
    assert (root / "processed" / NAME).read_bytes() == b"".join(parts)
    left = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    assert left == [Path("processed") / NAME]


async def _until_settled(
    service: Service, state: ConnectorState, root: Path, content: bytes, timeout: float = 120
) -> bool:
    """Wait until the whole file is in processed/, settled, and every row is a case."""
    deadline = time.monotonic() + timeout
    final = root / "processed" / NAME
    while time.monotonic() < deadline:
        known = (await state.load_known("acme", "drop")).get(NAME)
        if (
            known is not None
            and known.stage is None
            and known.cleaned
            and final.exists()
            and final.read_bytes() == content
            and await service.cases.count_cases("acme") == ROWS
        ):
            return True
        await asyncio.sleep(0.5)
    return False
