"""Real servers (OpenSSH sftp, PostgreSQL) started as subprocesses for integration tests.

Contract:

* ``sshd.SftpServer`` and ``postgres.PostgresServer`` start a private instance of the
  real server on 127.0.0.1 and a free port, inside a caller-chosen ``base_dir``.
* Any failure to start raises :class:`ServerStartError`; its message names the server,
  says why, and carries the tail of that server's log file.  Tests must let it fail the
  test (never skip).
* Both need root (system users, chroot, ``runuser``).
"""

from __future__ import annotations

import socket
from collections import deque
from pathlib import Path

__all__ = ["ServerStartError", "free_port", "log_tail"]


def log_tail(path: Path | None, lines: int = 40) -> str:
    """Return the last ``lines`` lines of ``path``, or a note if it cannot be read."""
    if path is None:
        return "(no log file)"
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            tail = deque(fh, maxlen=lines)
    except FileNotFoundError:
        return f"(log {path} not written yet)"
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "".join(tail).rstrip() or f"(log {path} is empty)"


class ServerStartError(RuntimeError):
    """A test server could not be started; the message names it, the reason and the log tail."""

    def __init__(self, server: str, reason: str, log: Path | None = None) -> None:
        self.server = server
        self.reason = reason
        self.log = log
        self.log_tail = log_tail(log)
        where = f" ({log})" if log is not None else ""
        super().__init__(
            f"{server} failed to start: {reason}\n--- log tail{where} ---\n{self.log_tail}"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the caller may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
