"""A running service as the deploy files expect it: /readyz reflects Kafka, the database and the
processors' assignment; /metrics has every metric the dashboard and the alert rules name; the
expected-file gauge flips when the day's file arrives.

The service runs in-process against the session's real Kafka and PostgreSQL. The database is
taken away (connections refused and cut) and given back to show /readyz failing with the
failing check named, then recovering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from deploy_support import alert_exprs, dashboard_exprs, metric_names
from prometheus_client.parser import text_string_to_metric_families
from servers.postgres import PostgresServer
from support import FAST_POLL, conversations_csv, running, settings_for

from connectors.local import LocalConfig
from streams.expected import ExpectFile
from streams.settings import ConnectorSettings

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def exposed_names(text: str) -> set[str]:
    """Every sample name a scrape can hold, including families with no sample yet (a labelled
    counter before its first increment): counters with ``_total``, histograms with
    ``_bucket``/``_sum``/``_count``."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as reply:
        if reply.content_type == "application/json":
            return reply.status, await reply.json()
        return reply.status, await reply.text()


async def _until(
    probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: last seen {value!r}"
        await asyncio.sleep(0.3)


def _gauge(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "callstream_connector_expected_file_missing":
                assert s.labels == {"tenant": "acme", "connector": "daily"}
                return s.value
    return None


async def test_readiness_metrics_and_expected_file(
    kafka: str, prefix: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.reset()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    daily = ConnectorSettings(
        name="daily",
        store=LocalConfig(root=inbox),
        poll=FAST_POLL,
        # a deadline at local midnight has always passed: missing until a file is announced
        expect_file=ExpectFile(by="00:00", timezone="Pacific/Auckland"),
    )
    settings = settings_for(
        kafka, prefix, tmp_path / "data", [daily], database_url=pg_server.async_url()
    )
    async with running(settings) as service, aiohttp.ClientSession() as http:
        base = service.http_url
        assert base is not None

        # 1. ready once Kafka and the database answer and every group gave its partitions
        _status, body = await _until(
            lambda: _get(http, f"{base}/readyz"), lambda r: r[0] == 200, 90, "/readyz"
        )
        assert body["status"] == "ready" and body["failing"] == []
        assert set(body["checks"]) == {
            "kafka",
            "database",
            "processors",
            "processors-bulk",
            "cases",
            "cases-bulk",
            "connectors",
        }
        assert "connector partition(s)" in body["checks"]["connectors"]["detail"]
        assert "partition(s) assigned" in body["checks"]["processors"]["detail"]
        assert "partition(s) assigned" in body["checks"]["cases"]["detail"]
        assert (await _get(http, f"{base}/healthz"))[0] == 200

        # 2. the expected file is missing, then arrives
        await _until(
            lambda: _get(http, f"{base}/metrics"), lambda r: _gauge(r[1]) == 1, 30, "missing=1"
        )
        (inbox / "calls.csv").write_bytes(conversations_csv(3))
        await _until(
            lambda: _get(http, f"{base}/metrics"), lambda r: _gauge(r[1]) == 0, 60, "missing=0"
        )

        # 3. every metric the dashboard and the alert rules name is exported
        _status, text = await _get(http, f"{base}/metrics")
        wanted = metric_names(dashboard_exprs()) | metric_names(alert_exprs())
        assert len(wanted) >= 10
        assert sorted(wanted - exposed_names(text)) == []

        # 4. the database goes away: not ready, naming it; it comes back: ready again
        pg_server.sql(
            "ALTER DATABASE callstream ALLOW_CONNECTIONS false",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'callstream'",
        )
        try:
            _status, body = await _until(
                lambda: _get(http, f"{base}/readyz"), lambda r: r[0] == 503, 30, "503"
            )
            assert "database" in body["failing"], body
            assert body["checks"]["kafka"]["ok"] is True
            assert body["status"] == "not_ready"
        finally:
            pg_server.sql("ALTER DATABASE callstream ALLOW_CONNECTIONS true")
        await _until(lambda: _get(http, f"{base}/readyz"), lambda r: r[0] == 200, 60, "200")
