"""Fixtures for the benchmarks: the integration suite's real servers, started once.

The integration suite's ``fixtures``, ``servers`` and ``support`` modules are imported from
``tests/integration`` (they are not a package).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from fixtures import (  # noqa: F401 - pytest finds fixtures by name in this module
    clean_upload,
    kafka,
    pg_server,
    platform_kafka,
    prefix,
    s3_bucket,
    s3_server,
    sftp_server,
)
