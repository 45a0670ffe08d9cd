"""Session fixtures of the integration suite: real Kafka, OpenSSH sftp, PostgreSQL and S3 servers.

They live in ``fixtures.py`` so the benchmarks can use the very same servers.
"""

from fixtures import (  # noqa: F401 - pytest finds fixtures by name in this module
    clean_upload,
    database_url,
    kafka,
    pg_server,
    platform_kafka,
    prefix,
    s3_bucket,
    s3_server,
    sftp_server,
    smtp_server,
    state,
)
