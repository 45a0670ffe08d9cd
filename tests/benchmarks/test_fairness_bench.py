"""Fairness benchmark: prints figures, asserts nothing about speed.

One ``callstream run`` process (PostgreSQL, one broker, local connectors polled every 1 s),
two tenants:

1. bravo's single-row files alone: p50 / p99 upload -> result (the baseline);
2. after a warm-up file of alpha's (5 % of the size), alpha's large file alone (100,000 rows
   in CI; ``make bench-fairness``: 1,000,000; ``CALLSTREAM_FAIRNESS_BENCH_ROWS``):
   conversations per second, drop -> last result;
3. the same size again (new conversations) while bravo drops a single-row file every
   ``INTERVAL`` seconds: bravo's p50 / p99 upload -> result and alpha's throughput;
4. alpha's file alone once more. The drop is step 3 against the mean of steps 2 and 4, so a
   drift over the runs (the tables grow by a file's rows each time, autovacuum catches up)
   weighs on both sides alike; a single "alone" run before "shared" put it all on "shared".

Times are the results' Kafka timestamps (set by the service's producer), minus the moment the
file appeared in its folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fairness_support import (
    BULK_TENANT,
    LIVE_TENANT,
    ResultClock,
    drop,
    service_process,
    two_tenants,
)
from report import p50_p99, target
from servers.postgres import PostgresServer
from support import conversations_csv

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("CALLSTREAM_FAIRNESS_BENCH_ROWS", "100000"))
INTERVAL = 3.0
BASELINE_FILES = 5
SMALL_START = 5_000_000  # external ids of bravo's files: never one of alpha's


def _quantiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p99 = p50_p99(values)
    return f"p50 {p50:.2f} s  p99 {p99:.2f} s  max {max(values):.2f} s  ({len(values)} files)"


class Bench:
    """Drops files and measures them against the result clock."""

    def __init__(self, clock: ResultClock, inbox: dict[str, Path]) -> None:
        self.clock, self.inbox = clock, inbox
        self.small = 0

    def small_file(self) -> tuple[str, float]:
        """Drop one of bravo's single-row files; return its conversation id and drop time."""
        i = SMALL_START + self.small
        self.small += 1
        at = drop(self.inbox[LIVE_TENANT], f"single_{i}.csv", conversations_csv(1, start=i))
        return f"CALL-{i:06d}", at

    def latencies(self, dropped: list[tuple[str, float]]) -> list[float]:
        """Wait for the result of every dropped small file; return upload -> result."""
        self.clock.wait(
            lambda: all(ext in self.clock.times(LIVE_TENANT) for ext, _at in dropped),
            300,
            "for bravo's results",
        )
        times = self.clock.times(LIVE_TENANT)
        return [times[ext] - at for ext, at in dropped]

    def bulk_file(
        self, name: str, start: int, while_processing: bool = False, rows: int = ROWS
    ) -> tuple[float, list[tuple[str, float]]]:
        """Drop alpha's large file (and, ``while_processing``, bravo's small files every
        ``INTERVAL`` s until its last result); return alpha's conversations/s and bravo's
        (id, drop time) pairs. Alpha's external ids are ``start`` and up: never reused."""
        before = self.clock.count(BULK_TENANT)
        at = drop(self.inbox[BULK_TENANT], name, conversations_csv(rows, start=start))
        dropped: list[tuple[str, float]] = []
        deadline = time.monotonic() + max(900.0, rows / 100)
        next_small = time.monotonic() + INTERVAL
        while self.clock.count(BULK_TENANT) < before + rows:
            assert time.monotonic() < deadline, f"alpha's {rows:,} rows did not all arrive"
            if while_processing and time.monotonic() >= next_small:
                dropped.append(self.small_file())
                next_small += INTERVAL
            time.sleep(0.05)
        times = self.clock.times(BULK_TENANT).items()
        ours = [t for ext, t in times if start <= int(ext[5:]) < start + rows]
        return rows / (max(ours) - at), dropped


def test_fairness_benchmark(
    kafka: str, prefix: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    pg_server.reset()
    settings, inbox = two_tenants(kafka, prefix, tmp_path, pg_server.async_url(), 1.0)
    clock = ResultClock(kafka, prefix)
    bench = Bench(clock, inbox)
    try:
        with service_process(settings, tmp_path):
            baseline_dropped: list[tuple[str, float]] = []
            for _ in range(BASELINE_FILES):
                baseline_dropped.append(bench.small_file())
                time.sleep(INTERVAL)
            baseline = bench.latencies(baseline_dropped)
            bench.bulk_file("warm_up.csv", 20_000_000, rows=max(ROWS // 20, 5_000))
            before, _ = bench.bulk_file("alone.csv", 0)
            shared, dropped = bench.bulk_file("shared.csv", 10_000_000, while_processing=True)
            during = bench.latencies(dropped)
            after, _ = bench.bulk_file("alone_again.csv", 30_000_000)
    finally:
        clock.close()
    size_mb = len(conversations_csv(1)) * ROWS / 1e6
    alone = (before + after) / 2
    drop, p99 = 1 - shared / alone, p50_p99(during)[1]
    lines = [
        "",
        "callstream fairness benchmark (one broker, 2 cores shared, PostgreSQL, local "
        "connectors, 1 s poll)",
        f"bravo's single-row files alone, one every {INTERVAL:.0f} s, upload -> result:",
        f"  {_quantiles(baseline)}",
        f"alpha's {ROWS:,}-row file (~{size_mb:.0f} MB, bulk lane) alone, before and after "
        "the run with bravo's files:",
        f"  {before:,.0f} and {after:,.0f} conversations/s (drop -> last result), "
        f"mean {alone:,.0f}",
        f"alpha's {ROWS:,}-row file while bravo drops a single-row file every {INTERVAL:.0f} s:",
        f"  alpha: {shared:,.0f} conversations/s, a drop of {drop:.1%} "
        f"against the mean alone {target('<= 10 %', drop <= 0.10)}",
        f"  bravo, upload -> result: {_quantiles(during)} "
        f"{target('p99 <= 5 s', bool(during) and p99 <= 5.0)}",
    ]
    print("\n".join(lines))
