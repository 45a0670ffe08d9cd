"""What the benchmarks share: timing a call, measuring peak RSS growth, printing a table."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
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
