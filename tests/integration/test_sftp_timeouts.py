"""A half-open link never hangs the SFTP store: reads and handshakes fail within their limits.

A loopback proxy sits between the store and the real OpenSSH server and, on demand, stops
forwarding without closing anything (a NAT that dropped the flow). The bounds asserted here are
the requirement itself: without them the files agent waits forever.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.proxy import StallingProxy
from servers.sshd import SftpServer
from support import sftp_config

from connectors.errors import StoreUnavailable
from connectors.sftp import SftpStore

TIMEOUT = 2.0
MiB = 1024 * 1024


@pytest.fixture
def proxy(sftp_server: SftpServer) -> Iterator[StallingProxy]:
    """A proxy in front of the test sshd."""
    with StallingProxy(sftp_server.host, sftp_server.port) as p:
        yield p


def _store(server: SftpServer, proxy: StallingProxy) -> SftpStore:
    return SftpStore(
        sftp_config(
            server,
            host="127.0.0.1",
            port=proxy.port,
            operation_timeout_seconds=TIMEOUT,
            connect_timeout_seconds=TIMEOUT,
            read_window_bytes=MiB,
        )
    )


def _bounded(fn: Callable[[], object], limit: float) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a daemon thread; return (what it raised, seconds) or fail after ``limit``."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised[0] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"still blocked after {limit:g}s: the link hangs the store"
    return raised[0], time.monotonic() - started


def test_a_read_over_a_link_that_goes_silent_fails_within_the_timeout(
    sftp_server: SftpServer, clean_upload: Path, proxy: StallingProxy
) -> None:
    (clean_upload / "big.wav").write_bytes(os.urandom(64 * MiB))
    store = _store(sftp_server, proxy)
    store.connect()
    try:
        stream = store.open("big.wav")
        assert len(stream.read(MiB)) == MiB  # the link works
        proxy.stall()

        def read_rest() -> None:
            while stream.read(MiB):
                pass

        raised, read_seconds = _bounded(read_rest, 6 * TIMEOUT)
        assert isinstance(raised, StoreUnavailable), raised
        assert "reading at offset" in str(raised)
        assert read_seconds < TIMEOUT + 3
        stream.close()
        # the stuck session was dropped: the next call fails at once and a reconnect is due
        raised, _ = _bounded(lambda: store.stat("big.wav"), TIMEOUT)
        assert isinstance(raised, StoreUnavailable)
        assert "no open session" in str(raised)
    finally:
        store.close()
    print(f"\nsilent link: the read failed after {read_seconds:.2f}s (limit {TIMEOUT:g}s)")


def test_a_handshake_with_a_server_that_never_answers_fails_within_the_connect_timeout(
    sftp_server: SftpServer, proxy: StallingProxy
) -> None:
    proxy.stall()  # TCP connects, the SSH banner never comes
    store = _store(sftp_server, proxy)
    raised, seconds = _bounded(store.connect, 6 * TIMEOUT)
    assert isinstance(raised, StoreUnavailable), raised
    assert "timed out" in str(raised)
    assert seconds < TIMEOUT + 3
    print(f"\nsilent server: the handshake failed after {seconds:.2f}s (limit {TIMEOUT:g}s)")
