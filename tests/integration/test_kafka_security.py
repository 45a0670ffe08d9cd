"""kafka.client_config reaches every Kafka client: a broker that only lets SCRAM users in.

The broker has two listeners: SASL_PLAINTEXT with SCRAM users (the only address the service is
given) and PLAINTEXT (used here by the test's own readers). A file goes end to end only if the
producer, the admin client, the file-outcome consumer and the Faust stream processors all log
in; wrong credentials stop the start with one clear error.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    TopicReader,
    connector,
    conversations_csv,
    running,
    settings_for,
    topics,
    write_config,
)

from connectors.local import LocalConfig
from streams.embedded.kafka import LocalKafka
from streams.settings import Settings

USER = "callstream-svc"
PASSWORD = "scram-test-Secret-7"


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own with a SASL/SCRAM listener beside the PLAINTEXT one."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-scram"), scram_users={USER: PASSWORD})
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def _sasl(password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": USER,
        "sasl.password": password,
    }


def _settings(broker: LocalKafka, prefix: str, tmp_path: Path, password: str) -> Settings:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    return settings_for(
        broker.sasl_bootstrap_servers,
        prefix,
        tmp_path / "data",
        [connector("drop", LocalConfig(root=inbox))],
        kafka={"client_config": _sasl(password)},
    )


async def test_a_file_goes_end_to_end_through_a_scram_only_listener(
    scram_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    settings = _settings(scram_kafka, prefix, tmp_path, PASSWORD)
    t = topics(prefix)
    plain = scram_kafka.bootstrap_servers
    results = TopicReader(plain, t.analysis_results, "callstream.AnalysisResult")
    cases = TopicReader(plain, t.cases, "callstream.CaseEvent")
    outcomes = TopicReader(plain, t.file_outcomes, "callstream.FileOutcome")
    try:
        async with running(settings):
            (tmp_path / "inbox" / "calls.csv").write_bytes(conversations_csv(20))
            # results and cases come from the Faust agents, which log in through aiokafka
            await results.wait_for(lambda rs: len(rs) >= 20, 90)
            await cases.wait_for(lambda rs: len(rs) >= 20, 30)
            await outcomes.wait_for(lambda rs: len(rs) >= 1, 30)
    finally:
        results.close()
        cases.close()
        outcomes.close()
    assert {r["external_interaction_id"] for r in results.records} == {
        f"CALL-{i:06d}" for i in range(20)
    }
    assert {c["kind"] for c in cases.records} == {"opened"}
    assert [(o["path"], o["outcome"], o["rows_accepted"]) for o in outcomes.records] == [
        ("calls.csv", "processed", 20)
    ]


def test_wrong_credentials_stop_the_start_with_one_clear_error(
    scram_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    settings = _settings(scram_kafka, prefix, tmp_path, "not-the-password")
    config = write_config(tmp_path / "callstream.yaml", settings)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streams", "--config", str(config), "run", "--no-echo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output  # a configuration problem, like check-config's
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "kafka.client_config: the broker refused the login" in output, output
    assert f"as '{USER}' (SCRAM-SHA-256)" in output, output
    assert "Authentication failed" in output, output
    assert "not-the-password" not in output
    # one error, not librdkafka's retry every few hundred milliseconds until a timeout
    assert len(output.splitlines()) <= 8, output
    assert "Traceback" not in output, output
    print(f"wrong credentials reported after {elapsed:.1f}s:\n{output}")
