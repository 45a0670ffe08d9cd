"""Fairness: one tenant's bulk file does not hold up another tenant's small file.

Tenant alpha drops a 200,000-row export; 3 s later tenant bravo drops a 1-row file. Both go
through one ``callstream run`` process (real Kafka, PostgreSQL, local connectors). Bravo's
result must be produced while alpha's file is still being processed: before alpha's last
result. With a single lane it waits behind alpha's whole backlog and comes last.
"""

from __future__ import annotations

import time
from pathlib import Path

from fairness_support import (
    BULK_TENANT,
    LIVE_TENANT,
    ResultClock,
    drop,
    service_process,
    two_tenants,
)
from servers.postgres import PostgresServer
from support import conversations_csv

BULK_ROWS = 200_000


def test_a_small_file_is_not_stuck_behind_another_tenants_bulk_file(
    kafka: str, prefix: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.reset()
    settings, inbox = two_tenants(kafka, prefix, tmp_path, pg_server.async_url())
    bulk = conversations_csv(BULK_ROWS)
    small = conversations_csv(1, start=900_000)
    clock = ResultClock(kafka, prefix)
    try:
        with service_process(settings, tmp_path):
            bulk_at = drop(inbox[BULK_TENANT], "daily_export.csv", bulk)
            time.sleep(3)
            small_at = drop(inbox[LIVE_TENANT], "one_call.csv", small)
            clock.wait(lambda: clock.count(LIVE_TENANT) == 1, 600, "for bravo's result")
            clock.wait(
                lambda: clock.count(BULK_TENANT) == BULK_ROWS, 900, "for alpha's last result"
            )
    finally:
        clock.close()
    small_result = clock.times(LIVE_TENANT)["CALL-900000"]
    bulk_last = max(clock.times(BULK_TENANT).values())
    print(
        f"\nalpha's {BULK_ROWS:,}-row file ({len(bulk) / 1e6:.1f} MB) dropped at 0.0 s; "
        f"bravo's 1-row file at {small_at - bulk_at:.1f} s\n"
        f"bravo's result at {small_result - bulk_at:.1f} s "
        f"({small_result - small_at:.1f} s after its upload)\n"
        f"alpha's last result at {bulk_last - bulk_at:.1f} s"
    )
    assert small_result < bulk_last, (
        f"bravo's result ({small_result - bulk_at:.1f} s) came after alpha's last "
        f"({bulk_last - bulk_at:.1f} s): it waited behind the bulk file"
    )
