"""Seed the demo tenant: a local inbox folder with sample conversation files.

Used only when no tenant is configured (or ``demo: true``). The inbox is
``<data_dir>/inbox/demo``; samples are copied once (a ``.seeded`` marker remembers it), so files
the user drops there later are the only new arrivals on the next run.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import wave
from pathlib import Path

from connectors.local import LocalConfig
from connectors.poller import PollConfig
from streams.settings import ConnectorSettings, Settings, TenantSettings

SAMPLES = Path(__file__).resolve().parent / "files"
TENANT = "demo"
CONNECTOR = "local-inbox"


def inbox(settings: Settings) -> Path:
    """Return the demo connector's folder."""
    return (settings.data_dir / "inbox" / TENANT).resolve()


def with_demo_tenant(settings: Settings) -> Settings:
    """Return settings with the demo tenant and its local-folder connector added."""
    connector = ConnectorSettings(
        name=CONNECTOR,
        store=LocalConfig(root=inbox(settings), create=True),
        poll=PollConfig(interval_seconds=2, min_age_seconds=1),
    )
    tenants = [t for t in settings.tenants if t.id != TENANT]
    tenants.append(TenantSettings(id=TENANT, connectors=[connector]))
    return settings.model_copy(update={"tenants": tenants, "demo": True})


def _write_recording(path: Path, seconds: float = 1.0, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack("<h", 0) * int(seconds * rate))


def seed(settings: Settings) -> list[Path]:
    """Copy the sample files into the demo inbox once; return the files written."""
    root = inbox(settings)
    marker = root / ".seeded"
    if marker.exists():
        return []
    written: list[Path] = []
    for src in sorted(SAMPLES.rglob("*")):
        if src.is_file():
            dst = root / src.relative_to(SAMPLES)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(dst)
    recordings = root / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    for name in ("20261120-090112_a-17.wav", "20261120-091503_a-22.wav"):
        _write_recording(recordings / name)
        written.append(recordings / name)
    past = time.time() - 60  # already complete: announced on the first two polls
    for p in written:
        os.utime(p, (past, past))
    marker.write_text("samples copied; delete this file to copy them again\n")
    return written
