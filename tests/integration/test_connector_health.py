"""A connector's health shows on every worker's API, not only on the worker that polls it.

Two workers on one PostgreSQL database and broker: one runs the connectors (``roles:
[connectors]``), the other only the API (``roles: [api]``). The API worker answers ``GET
/v1/connectors`` with the health the connector worker reported: polls going well, then failing
with the error, and, once that worker is gone, a report that stops advancing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from api_support import OPERATOR_TOKEN, ApiClient, create_local_connector, tenant_key, until
from servers.postgres import PostgresServer
from support import connector, running, settings_for, unique_prefix

from connectors.local import LocalConfig
from streams.connector_health import REPORT_SECONDS, HealthReporter


def _health(body: dict[str, Any]) -> dict[str, Any]:
    """The one connector's health (a KeyError until it has one)."""
    [item] = body["items"]
    if item["health"] is None:
        raise KeyError("no health reported yet")
    health: dict[str, Any] = item["health"]
    return health


async def test_the_api_worker_shows_the_health_the_connector_worker_reported(
    kafka: str, tmp_path: Path, pg_server: PostgresServer
) -> None:
    pg_server.reset()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base = settings_for(
        kafka,
        unique_prefix(),
        tmp_path / "data",
        [connector("drop", LocalConfig(root=inbox), interval_seconds=0.3)],
        database_url=pg_server.async_url(),
        api={"operator_token": OPERATOR_TOKEN},
    )
    polling = base.model_copy(update={"roles": ["connectors"], "data_dir": tmp_path / "w1"})
    api_only = base.model_copy(update={"roles": ["api"], "data_dir": tmp_path / "w2"})
    async with running(api_only) as front, ApiClient(front.http_url or "") as client:
        assert front.runner is None  # this worker polls nothing itself
        me = client.as_(await tenant_key(client, "acme"))
        async with running(polling) as back:
            assert back.runner is not None
            worker = back.runner.worker
            body = await until(me, "/v1/connectors", lambda b: _health(b)["state"] == "ok")
            health = _health(body)
            assert health["worker"] == worker and health["last_success"] is not None
            reported = dt.datetime.fromisoformat(health["reported_at"])
            assert abs((dt.datetime.now(dt.UTC) - reported).total_seconds()) < 3 * REPORT_SECONDS

            shutil.rmtree(inbox)  # the connector's folder is gone: its polls fail
            body = await until(me, "/v1/connectors", lambda b: _health(b)["state"] == "error")
            failing = _health(body)
            assert failing["worker"] == worker and failing["consecutive_failures"] >= 1
            assert failing["last_error"] and failing["last_error_kind"], failing
            one = await me.get(f"/v1/connectors/{body['items'][0]['id']}")
            assert one.status == 200 and one.body["health"]["state"] == "error"
        # The connector worker stopped: its last report stays, and no longer advances.
        last = _health((await me.get("/v1/connectors")).body)
        await asyncio.sleep(REPORT_SECONDS + 1)
        assert _health((await me.get("/v1/connectors")).body) == last


async def test_a_disabled_connector_shows_no_health_from_its_last_report(
    kafka: str, tmp_path: Path, pg_server: PostgresServer
) -> None:
    """A report from before the connector was disabled is not shown as its health."""
    pg_server.reset()
    base = settings_for(
        kafka,
        unique_prefix(),
        tmp_path / "data",
        [],
        database_url=pg_server.async_url(),
        api={"operator_token": OPERATOR_TOKEN},
    )
    inbox = base.data_dir / "local" / "acme" / "inbox"  # API connectors' folders live here
    async with running(base) as service, ApiClient(service.http_url or "") as client:
        me = client.as_(await tenant_key(client, "acme"))
        ident = await create_local_connector(me, inbox)
        await until(
            me, f"/v1/connectors/{ident}", lambda b: (b["health"] or {}).get("state") == "ok"
        )
        assert service.runner is not None
        await HealthReporter(
            service.state.engine, service.runner.statuses, service.runner.worker
        ).report_once()  # a report of it exists
        disabled = await me.patch(f"/v1/connectors/{ident}", {"enabled": False})
        assert disabled.status == 200, disabled.text
        await until(me, f"/v1/connectors/{ident}", lambda b: b["health"] is None, timeout=30)
        assert (await me.get("/v1/connectors")).body["items"][0]["health"] is None
