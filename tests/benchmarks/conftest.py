"""Fixtures for the benchmarks: a private OpenSSH sftp server (same harness as integration).

The integration suite's ``servers`` and ``support`` modules are imported from
``tests/integration`` (they are not a package). The server lives under
``/srv/callstream-test/<uuid>``: OpenSSH's ``ChrootDirectory`` needs root-owned path components,
which ``/tmp`` (mode 1777) is not.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from servers.sshd import SftpServer  # noqa: E402

SFTP_TEST_ROOT = Path("/srv/callstream-test")


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """OpenSSH sshd with internal-sftp: user cs_pw (password) and cs_key (ed25519 key)."""
    base = SFTP_TEST_ROOT / uuid.uuid4().hex
    server = SftpServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
