"""The file processor resumes after an outage instead of republishing the whole file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from connectors.base import RemoteFile
from connectors.local import LocalConfig
from connectors.poller import PollConfig
from streams.cases.store import CaseStore
from streams.codec import AvroCodec
from streams.errors import PublishError
from streams.ingest.files import FileProcessor
from streams.kafka import Record
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.runner import file_id
from streams.settings import ConnectorSettings, Settings, TenantSettings
from streams.topics import Topics

CODEC = AvroCodec()
TOPICS = Topics("t")
HEADER = "external_interaction_id,channel,started_at\n"


class FlakyProducer:
    """Acknowledges batches, except that it fails the ``fail_at``-th one once."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.records: list[Record] = []

    async def send_batch(self, records: list[Record]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise PublishError("broker went away")
        self.records.extend(records)


def arrival_for(root: Path, path: str) -> dict[str, Any]:
    st = (root / path).stat()
    version = RemoteFile(path, st.st_size, st.st_mtime).version_id
    now = dt.datetime.now(dt.UTC)
    return {
        "file_id": file_id("acme", "drop", path, version),
        "tenant": "acme",
        "connector": "drop",
        "path": path,
        "version_id": version,
        "mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        "size": st.st_size,
        "announced_at": now,
    }


@pytest.fixture(params=[0, 1], ids=["in-process", "row-worker"])
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    drop = ConnectorSettings(
        name="drop", store=LocalConfig(root=tmp_path / "in"), poll=PollConfig(min_age_seconds=0)
    )
    return Settings(
        data_dir=tmp_path / "data",
        demo=False,
        processors={"chunk_rows": 1000, "row_worker_min_bytes": request.param},
        tenants=[TenantSettings(id="acme", connectors=[drop])],
    )


async def test_a_retry_after_an_outage_resumes_after_the_last_acknowledged_chunk(
    tmp_path: Path, settings: Settings
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    rows = "".join(f"CALL-{i},voice,2026-11-20T09:00:00Z\n" for i in range(5000))
    (inbox / "big.csv").write_text(HEADER + rows + "CALL-X,fax,2026-11-20T09:00:00Z\n")
    producer = FlakyProducer(fail_at=3)  # chunks 1 and 2 acknowledged, then the broker is gone
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    async with CaseStore(url, CODEC, TOPICS, lambda _t: ()) as store:
        processor = FileProcessor(
            settings,
            CODEC,
            TOPICS,
            producer,
            Metrics(),
            store,
            LocalMediaStore(tmp_path / "m"),  # type: ignore[arg-type]
        )
        arrival = arrival_for(inbox, "big.csv")
        try:
            with pytest.raises(PublishError):
                await processor.process(arrival)
            result = await processor.process(arrival)  # the agent's retry
            again = await processor.process(arrival)  # a redelivery after the outcome
        finally:
            processor.close()
    conversations = [r for r in producer.records if r[0] == TOPICS.conversations]
    keys = [key for _topic, key, _value in conversations]
    assert len(keys) == len(set(keys)) == 5000  # nothing republished
    assert (result.outcome, result.accepted, dict(result.rejected)) == (
        "partial",
        5000,
        {"invalid_value": 1},
    )
    assert again.skipped == "already_decided"
    outcomes = [
        CODEC.decode("callstream.FileOutcome", v)
        for t, _k, v in producer.records
        if t == TOPICS.file_outcomes
    ]
    assert [o["outcome"] for o in outcomes] == ["partial", "partial"]
    assert outcomes[0]["lines_read"] == 5002
