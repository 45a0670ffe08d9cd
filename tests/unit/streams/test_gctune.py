"""The collector's tuning for long-running processes (streams/gctune.py) and when `callstream
run` applies it. The tuning changes a whole interpreter, so it runs in a fresh one here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.service import run_until_stopped

ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import gc, json, weakref
from streams.gctune import YOUNG_THRESHOLD, tune_for_throughput

class Node:
    pass

before = gc.get_threshold()
tune_for_throughput()
after, frozen = gc.get_threshold(), gc.get_freeze_count()
first = Node()
first.me = first  # a reference cycle: only the collector frees it
probe = weakref.ref(first)
del first
alive_early = probe() is not None
for _ in range(3 * YOUNG_THRESHOLD):  # more cycles than one young generation holds
    n = Node()
    n.me = n
print(json.dumps([before, after, frozen, YOUNG_THRESHOLD, alive_early, probe() is None]))
"""


def test_tuning_freezes_the_start_up_heap_and_still_frees_cycles_later() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, check=True, capture_output=True, text=True
    )
    before, after, frozen, young, alive_early, freed = json.loads(out.stdout)
    assert after == [young, before[1], before[2]]  # only the young generation's threshold
    assert young > before[0]
    assert frozen > 1000  # the interpreter's and the imported modules' objects
    assert alive_early and freed  # cyclic garbage waits for a collection, then is freed


class _Service:
    """What run_until_stopped uses of a Service."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.settings = SimpleNamespace(shutdown_grace_seconds=1.0)
        self.start_interrupted = False
        self.unstopped: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail:
            raise RuntimeError("no broker")

    async def stop(self, grace: float | None = None) -> list[str]:
        self.calls.append("stop")
        return []

    def say(self, line: str) -> None:
        self.calls.append(f"say {line}")


async def test_on_started_runs_once_the_service_started_and_before_it_stops() -> None:
    service, stop = _Service(), asyncio.Event()

    def started() -> None:
        service.calls.append("started")
        stop.set()

    fake: Any = service
    await run_until_stopped(fake, stop, on_started=started)
    assert service.calls == ["start", "started", "say stopping ...", "stop"]


async def test_on_started_does_not_run_when_the_start_fails() -> None:
    service = _Service(fail=True)
    fake: Any = service
    with pytest.raises(RuntimeError, match="no broker"):
        await run_until_stopped(fake, asyncio.Event(), on_started=lambda: service.calls.append("x"))
    assert service.calls == ["start"]
