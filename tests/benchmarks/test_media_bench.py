"""Media benchmark: copy a large recording from SFTP into the S3 media store; print the copying
process's peak memory and the throughput (figures only, nothing about speed is asserted).

The copy runs in a child process (``tests/integration/media_copy.py``) exactly as the file
processor does it: ``SftpStore.open()`` on the test sshd server (user ``cs_key``) streamed into
``S3MediaStore.put_media`` on moto's S3 server (16 MiB parts, SHA-256 in the stream, the
multipart upload, the server-side copy to the dated key, the verification). The child reports
its ``VmRSS`` before the copy and its ``VmHWM`` / ``ru_maxrss`` after it: the whole process's
peak, interpreter and libraries included. Target: under 300 MB for a 2 GB recording.

CI copies a reduced 200 MB recording (and says so); the full 2 GB run::

    make bench-media        # CALLSTREAM_BENCH_MEDIA_BYTES=2000000000
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from servers.s3 import S3Server
from servers.sshd import SftpServer
from support import _plain, sftp_config

pytestmark = pytest.mark.benchmark

USER = "cs_key"
MB = 1_000_000
MiB = 1024 * 1024
FULL_SIZE = 2_000_000_000
CI_SIZE = 200 * MB
SIZE = int(os.environ.get("CALLSTREAM_BENCH_MEDIA_BYTES", CI_SIZE))
RATE = 8000  # 8 kHz, 16-bit mono PCM: 16,000 bytes a second
COPIER = Path(__file__).resolve().parents[1] / "integration" / "media_copy.py"


def _write_wav(path: Path, size: int, like: Path) -> str:
    """Write a ``size``-byte PCM WAV of random samples (owned like ``like``); return its SHA-256."""
    data_bytes = size - 44
    header = (
        b"RIFF"
        + struct.pack("<I", size - 8)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    digest = hashlib.sha256(header)
    with path.open("wb") as fh:
        fh.write(header)
        left = data_bytes
        while left:
            block = os.urandom(min(8 * MiB, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    st = like.stat()
    os.chown(path, st.st_uid, st.st_gid)
    return digest.hexdigest()


def test_sftp_to_s3_media_copy_memory_and_throughput(
    sftp_server: SftpServer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    folder = sftp_server.upload_dir(USER)
    name = "20261120-093000_u1.wav"
    recording = folder / name
    try:
        t0 = time.perf_counter()
        digest = _write_wav(recording, SIZE, folder)
        made_s = time.perf_counter() - t0
        spec: dict[str, Any] = {
            "media": {
                "type": "s3",
                "bucket": s3_bucket,
                "prefix": "media",
                "endpoint_url": s3_server.endpoint_url,
                "addressing_style": "path",
                "access_key_id": s3_server.access_key_id,
                "secret_access_key": s3_server.secret_access_key,
                "read_timeout_seconds": 300,  # moto reassembles a large upload in one request
            },
            "data_dir": str(tmp_path),
            "tenant": "acme",
            "file_id": "bench0001",
            "name": name,
            "when": "2026-11-20T09:30:00+00:00",
            "source": {
                "kind": "sftp",
                "store": _plain(sftp_config(sftp_server, USER).model_dump()),
                "path": name,
            },
        }
        proc = subprocess.run(
            [sys.executable, str(COPIER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout.splitlines()[-1])
    finally:
        recording.unlink(missing_ok=True)

    # Correctness: what the store holds is the recording, checksum and duration included.
    assert (result["sha256"], result["size"]) == (digest, SIZE)
    assert result["duration_seconds"] == pytest.approx((SIZE - 44) / (2 * RATE))
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"media/{result['key']}")
    assert (head["ContentLength"], head["Metadata"]) == (SIZE, {"sha256": digest})

    reduced = "" if SIZE >= FULL_SIZE else " (REDUCED for CI; full 2 GB: make bench-media)"
    print()
    print(f"SFTP -> S3 media store, {SIZE / MB:,.0f} MB recording{reduced}")
    print("-" * 72)
    print(f"copy time                    {result['seconds']:8.1f} s")
    print(f"throughput                   {SIZE / MB / result['seconds']:8.1f} MB/s")
    print(f"copier RSS before the copy   {result['rss_before'] / MB:8.1f} MB")
    print(f"copier peak RSS (VmHWM)      {result['vm_hwm'] / MB:8.1f} MB   (target < 300 MB)")
    print(
        f"copier ru_maxrss             {result['ru_maxrss'] / MB:8.1f} MB   "
        "(Linux keeps the forking parent's peak across exec: an upper bound)"
    )
    print(f"recording duration (header)  {result['duration_seconds']:8.0f} s")
    print("-" * 72)
    print(
        "One child process: SftpStore.open() (user cs_key, test sshd) -> S3MediaStore.put_media "
        "(16 MiB parts, SHA-256 per part and whole, multipart to a staging key, server-side "
        f"copy, HeadObject check) on moto. Writing the file took {made_s:.1f} s (not counted)."
    )
