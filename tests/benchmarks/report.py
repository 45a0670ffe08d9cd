"""What the benchmarks share: timing a call and printing a figures table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Return (seconds ``fn()`` took, its result)."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


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
