"""A loopback TCP proxy that can go silent (a half-open link) or break a connection, on demand.

Contract:

* ``StallingProxy(host, port)`` does no I/O; ``start()`` listens on 127.0.0.1 and a free port
  (``port``) and forwards every accepted connection to ``host:port`` in both directions.
* ``stall()`` stops forwarding on every connection, current and future, *without closing
  anything*: both ends keep an open TCP connection that carries no more bytes, as when a NAT
  or firewall drops a flow silently. New connections are accepted but get nothing.
* ``break_after(n)`` lets ``n`` more bytes through toward the client and then closes the
  connection that carried them, both ends, mid-response (one connection, once).
* ``stop()`` closes every socket; idempotent. Usable as a context manager.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType

__all__ = ["StallingProxy"]


class StallingProxy:
    """Forward 127.0.0.1:<port> to a target until told to stall (see the module doc)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._stalled = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._break_budget: int | None = None
        self.breaks = 0

    @property
    def port(self) -> int:
        """The port clients connect to."""
        if self._listener is None:
            raise RuntimeError("proxy not started")
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Listen and forward in background threads."""
        listener = socket.create_server(("127.0.0.1", 0))
        self._listener = listener
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def stall(self) -> None:
        """Stop forwarding anything, keeping every connection open."""
        self._stalled.set()

    def break_after(self, nbytes: int) -> None:
        """Forward ``nbytes`` more toward the client, then close that connection."""
        with self._lock:
            self._break_budget = nbytes

    def _take(self, n: int) -> int | None:
        """Return how many of ``n`` bytes may go toward the client before the break, or None
        when all of them may (no break armed, or not reached yet)."""
        with self._lock:
            budget = self._break_budget
            if budget is None:
                return None
            if n < budget:
                self._break_budget = budget - n
                return None
            self._break_budget = None
            self.breaks += 1
            return budget

    def stop(self) -> None:
        """Close every socket."""
        self._stopped.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
            if self._listener is not None:
                sockets.append(self._listener)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> StallingProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if self._stalled.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            for src, dst, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, toward_client: bool = False) -> None:
        while not self._stopped.is_set():
            if self._stalled.is_set():
                self._stopped.wait(0.1)  # hold everything: nothing read, nothing sent
                continue
            try:
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                cut = self._take(len(data)) if toward_client else None
                if cut is not None:
                    dst.sendall(data[:cut])
                    for sock in (src, dst):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    return
                dst.sendall(data)
            except OSError:
                return
