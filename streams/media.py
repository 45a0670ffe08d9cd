"""The media store: recordings and oversized raw rows, kept beside (never on) Kafka.

Contract: :meth:`LocalMediaStore.put` streams a binary file object into the store under a
relative key with bounded memory while hashing it, atomically (a partial copy is never visible
under the key), and returns the key and the SHA-256. Keys are built by callers from tenant,
connector and file ids, never from file content alone; they are normalised and may not leave
the store's root. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

from connectors import paths


class LocalMediaStore:
    """A media store in a local directory (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, stream: IO[bytes]) -> tuple[str, str]:
        """Copy ``stream`` to ``key``; return ``(key, sha256 hex)``."""
        key = paths.normalize(key)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        tmp = target.with_name(f".{target.name}.part")
        with tmp.open("wb") as out:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
        return key, digest.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key``; return the key."""
        key = paths.normalize(key)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return key
