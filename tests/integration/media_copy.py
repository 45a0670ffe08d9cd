"""Copy one recording into a media store, in a process of its own.

Used by the tests that ``kill -9`` a copy midway (``tests/integration/test_media_store.py``) and
by the benchmark that measures the copying process's peak memory
(``tests/benchmarks/test_media_bench.py``)::

    python tests/integration/media_copy.py '<json>'

The JSON names ``media`` (the ``media`` settings section, secrets in clear), ``data_dir``, the
recording's ``tenant``, ``file_id``, ``name`` and ``when`` (ISO 8601), and the ``source``:

- ``{"kind": "slow", "size": N, "chunk": C, "delay": S}``: :func:`pattern` bytes, ``C`` per
  read, sleeping ``S`` seconds before each read (a slow link);
- ``{"kind": "sftp", "store": {...SftpConfig...}, "path": P}``: the file ``P`` read through
  :class:`connectors.sftp.SftpStore`, as the file processor reads it.

It prints ``ready`` once everything is imported and connected, then one JSON line: the stored
media, the copy's seconds, and the process's memory (``VmRSS`` before the copy, ``VmHWM`` and
``ru_maxrss`` after it, bytes).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO


def pattern(offset: int, n: int) -> bytes:
    """``n`` bytes of a deterministic, non-repeating-per-MiB pattern starting at ``offset``."""
    out = bytearray()
    while len(out) < n:
        block, within = divmod(offset + len(out), 1 << 20)
        seed = block.to_bytes(8, "big") * 8  # 64 bytes that differ per MiB
        take = min(n - len(out), (1 << 20) - within)
        start = within % 64
        reps = (start + take) // 64 + 1
        out += (seed * reps)[start : start + take]
    return bytes(out)


class SlowSource:
    """A readable stream of :func:`pattern` bytes that pauses before every read."""

    def __init__(self, size: int, chunk: int, delay: float) -> None:
        self.size, self.chunk, self.delay = size, chunk, delay
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        time.sleep(self.delay)
        take = min(self.size - self.pos, self.chunk, n if n >= 0 else self.chunk)
        data = pattern(self.pos, take)
        self.pos += take
        return data

    def close(self) -> None:
        pass


def _status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def main(spec: dict[str, Any]) -> None:
    from connectors.sftp import SftpConfig, SftpStore
    from streams.media_s3 import open_media_store
    from streams.settings import Settings

    settings = Settings(data_dir=Path(spec["data_dir"]), demo=False, media=spec["media"])
    store = open_media_store(settings)
    store.start()
    source = spec["source"]
    stream: BinaryIO | SlowSource
    if source["kind"] == "slow":
        stream = SlowSource(source["size"], source["chunk"], source["delay"])
    else:
        sftp = SftpStore(SftpConfig(**source["store"]))
        sftp.connect()
        stream = sftp.open(source["path"])
    print("ready", flush=True)
    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    stored = store.put_media(
        spec["tenant"],
        spec["file_id"],
        spec["name"],
        stream,  # type: ignore[arg-type]
        when=dt.datetime.fromisoformat(spec["when"]),
    )
    seconds = time.perf_counter() - t0
    stream.close()
    result = {
        "key": stored.key,
        "uri": stored.uri,
        "sha256": stored.sha256,
        "size": stored.size,
        "duration_seconds": stored.duration_seconds,
        "seconds": seconds,
        "rss_before": before,
        "vm_hwm": _status_bytes("VmHWM"),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
