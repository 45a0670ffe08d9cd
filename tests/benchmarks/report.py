"""What the benchmarks share: timing a call, measuring peak RSS growth, printing a table."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

MB = 1_000_000


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Return (seconds ``fn()`` took, its result)."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def p50_p99(values: Sequence[float]) -> tuple[float, float]:
    """The median and 99th percentile of ``values``, interpolated between the samples (never
    beyond the largest, as the exclusive method does with few samples); 0s when empty."""
    if len(values) < 2:
        only = values[0] if values else 0.0
        return only, only
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


def target(goal: str, met: bool) -> str:
    """``(target <goal>: met)`` or ``(target <goal>: MISSED)``: benchmarks assert nothing (speed
    goals are never timed assertions), so a missed goal must stand out in the CI log."""
    return f"(target {goal}: {'met' if met else 'MISSED'})"


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    """Print ``rows`` under ``header``: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def cells(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    print()
    print(title)
    print(line)
    print(cells(header))
    print(line)
    for row in rows:
        print(cells(row))
    print(line)
    for note in notes:
        print(note)


#: A profile area: its label and the needles (substrings of a frame) that put a stack in it.
Area = tuple[str, tuple[str, ...]]


def profile_summary(
    raw: Path,
    areas: Sequence[Area],
    *,
    other: str,
    top: int,
    match: Callable[[Iterable[bool]], bool] = all,
) -> list[str]:
    """Aggregate py-spy's collapsed stacks (``raw``): self samples per area and per function.

    A stack counts in the first area of ``areas`` for which ``match`` (``all`` or ``any``) holds
    over "this needle occurs in one of the stack's frames", else under ``other``. Returns the
    lines to print: areas by share, then the ``top`` functions by own samples.
    """
    own: collections.Counter[str] = collections.Counter()
    area: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for label, needles in areas:
            if match(any(needle in frame for frame in frames) for needle in needles):
                area[label] += n
                break
        else:
            area[other] += n
    if not total:
        return ["  (no samples)"]
    lines = [f"  {100 * n / total:5.1f}%  {label}" for label, n in area.most_common()]
    lines.append("  top functions by own samples:")
    lines += [f"  {100 * n / total:5.1f}%  {fn[:110]}" for fn, n in own.most_common(top)]
    return lines


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None, field
    return int(match.group(1))


def _release_heap() -> None:
    """Free garbage and hand glibc's free heap back so the next baseline RSS is honest."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRss:
    """Growth of this process's peak RSS since :meth:`start` (MB), C buffers included."""

    def __init__(self) -> None:
        self._base = 0
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        _release_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:  # older kernels / no permission: sample RSS instead
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self._base = _status_kib("VmRSS")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._samples.append(_status_kib("VmRSS"))

    def growth_mb(self) -> float:
        if self._sampler is None:
            peak = _status_kib("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            peak = max([self._base, *self._samples])
        return (peak - self._base) * 1024 / MB


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every process: pid -> (parent pid, CPU clock ticks used so far, command line)."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), argv)
    return table


def _machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, idle ticks) of the machine so far."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(cpu[:8]), cpu[3] + cpu[4]


class CpuByProcess:
    """CPU seconds each kind of process used between :meth:`start` and :meth:`stop`.

    ``roots`` labels process trees (a callstream service and its row worker, say); every
    other process is labelled by its command line: PostgreSQL, the Kafka broker, sshd, py-spy,
    this benchmark process, the rest as "other". A process started inside the window counts
    whole; one that ended inside it is not counted (an sftp session's sshd, say); the machine's
    idle time is reported alongside.
    """

    _KINDS = (
        ("PostgreSQL", "postgres"),
        ("Kafka broker", "kafka.Kafka"),
        ("sshd (sftp)", "sshd"),
        ("py-spy", "py-spy"),
    )

    def __init__(self, roots: dict[str, Sequence[int]]) -> None:
        self.roots = roots
        self._before: dict[int, tuple[int, int, str]] = {}
        self._machine: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._before, self._machine = _processes(), _machine_ticks()

    def _label(self, pid: int, table: dict[int, tuple[int, int, str]]) -> str:
        seen, up = set(), pid
        while up in table and up not in seen:
            seen.add(up)
            for label, pids in self.roots.items():
                if up in pids:
                    return label
            up = table[up][0]
        if pid == os.getpid():
            return "benchmark process"
        argv = table[pid][2]
        return next((label for label, needle in self._KINDS if needle in argv), "other")

    def stop(self) -> tuple[dict[str, float], float, float]:
        """(CPU seconds by label, the window's wall seconds times the cores, idle seconds)."""
        after, (total, idle) = _processes(), _machine_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        used: collections.Counter[str] = collections.Counter()
        for pid, (_parent, ticks, argv) in after.items():
            was = self._before.get(pid)
            since = was[1] if was is not None and was[2] == argv else 0  # else: started inside
            used[self._label(pid, after)] += (ticks - since) / hz
        return dict(used), (total - self._machine[0]) / hz, (idle - self._machine[1]) / hz

    def lines(self, per: int, what: str) -> list[str]:
        """:meth:`stop`, as lines to print: seconds and milliseconds per ``per`` ``what``."""
        used, capacity, idle = self.stop()
        lines = [f"  CPU by process (of {capacity:.1f} CPU-s on all cores; ms per 1,000 {what}):"]
        for label, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {label:<28} {seconds:7.1f} s  {seconds * 1e6 / per:8.1f}")
        lines.append(f"    {'idle':<28} {idle:7.1f} s")
        measuring = ("py-spy", "benchmark process")
        cost = sum(v for k, v in used.items() if k not in measuring) / per
        cores = os.cpu_count() or 1
        if cost:
            lines.append(
                f"  at that cost {cores} cores finish at most {cores / cost:,.0f} {what}/s "
                "(py-spy and this process left out)"
            )
        return lines
