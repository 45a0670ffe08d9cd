"""An HTTP recording server on loopback (aiohttp), for recordings fetched by reference.

Contract: ``RecordingServer()`` does no I/O; ``start()`` serves on a free 127.0.0.1 port from its
own thread and event loop, checks it answers and returns (failure raises
:class:`~servers.ServerStartError`); ``stop()`` is idempotent. ``url(path)`` builds a URL.
Routes (``name`` is a key of :attr:`files`, set with :meth:`put`):

- ``/ok/{name}``: 200 with the bytes (404 while ``name`` is not there);
- ``/busy/{n}/{name}``: 429 (``Retry-After: 0``) the first ``n`` times, then as ``/ok``;
- ``/slow/{name}``: headers and the first bytes, then silence for :attr:`slow_seconds`;
- ``/truncated/{name}``: Content-Length larger than the body, half the body, connection closed;
- ``/big/{size}``: ``size`` bytes with a Content-Length; ``/stream/{size}``: the same, chunked;
- ``/redirect?to=URL``: 302 to ``URL``;
- ``/text/{name}``: the bytes as ``text/html``;
- ``/calls/{call_id}/audio``: the bytes of ``calls[call_id]``, only with the header
  ``auth_header: auth_value`` (401 without it, 404 for an unknown call).

:attr:`hits` counts requests per path; :attr:`headers` keeps each request's headers.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections import Counter
from typing import Any

from aiohttp import web

from servers import ServerStartError, free_port

__all__ = ["RecordingServer"]


class RecordingServer:
    """See the module doc."""

    auth_header = "X-Voicelog-Key"

    def __init__(self, auth_value: str = "vl-secret-token", slow_seconds: float = 30.0) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.auth_value = auth_value
        self.slow_seconds = slow_seconds
        self.files: dict[str, bytes] = {}
        self.calls: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, list[dict[str, str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def url(self, path: str) -> str:
        """Return ``http://127.0.0.1:<port><path>``."""
        return f"http://{self.host}:{self.port}{path}"

    def put(self, name: str, data: bytes) -> None:
        """Serve ``data`` as ``name``."""
        self.files[name] = data

    # -- handlers --------------------------------------------------------------------------------

    def _seen(self, request: web.Request) -> None:
        self.hits[request.path] += 1
        self.headers.setdefault(request.path, []).append(dict(request.headers))

    def _bytes(self, name: str) -> bytes:
        if name not in self.files:
            raise web.HTTPNotFound(text=f"no recording {name}")
        return self.files[name]

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        return web.Response(body=self._bytes(request.match_info["name"]), content_type="audio/wav")

    async def _busy(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if self.hits[request.path] <= int(request.match_info["n"]):
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        return web.Response(body=self._bytes(request.match_info["name"]), content_type="audio/wav")

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        data = self._bytes(request.match_info["name"])
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[:100])
        await asyncio.sleep(self.slow_seconds)
        await response.write(data[100:])
        return response

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        data = self._bytes(request.match_info["name"])
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = len(data) + 1000
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        await response.drain()  # type: ignore[attr-defined]
        assert request.transport is not None
        request.transport.close()  # the peer sees the connection end mid-body
        return response

    async def _big(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        if request.path.startswith("/big/"):
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        block = b"\x00" * 65_536
        sent = 0
        try:
            while sent < size:
                part = block[: min(len(block), size - sent)]
                await response.write(part)
                sent += len(part)
        except (ConnectionResetError, ConnectionError):
            return response  # the client stopped reading: expected
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        raise web.HTTPFound(request.query["to"])

    async def _text(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        return web.Response(body=self._bytes(request.match_info["name"]), content_type="text/html")

    async def _call(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if request.headers.get(self.auth_header) != self.auth_value:
            return web.Response(status=401, text="who are you?")
        call_id = request.match_info["call_id"]
        if call_id not in self.calls:
            return web.Response(status=404, text=f"no call {call_id}")
        return web.Response(body=self.calls[call_id], content_type="audio/x-wav")

    # -- lifecycle -------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ok/{name}", self._ok)
        app.router.add_get("/busy/{n}/{name}", self._busy)
        app.router.add_get("/slow/{name}", self._slow)
        app.router.add_get("/truncated/{name}", self._truncated)
        app.router.add_get("/big/{size}", self._big)
        app.router.add_get("/stream/{size}", self._big)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/text/{name}", self._text)
        app.router.add_get("/calls/{call_id}/audio", self._call)
        return app

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
        except OSError as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> None:
        """Serve on a free loopback port; raise ServerStartError if it does not answer."""
        self.port = free_port()
        self._thread = threading.Thread(target=self._serve, name="recording-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise ServerStartError(f"recording server did not start: {self._error!r}")
        self.put("__probe.wav", b"RIFF")
        try:
            with urllib.request.urlopen(self.url("/ok/__probe.wav"), timeout=5) as answer:  # noqa: S310 - loopback
                answer.read()
        except OSError as exc:
            self.stop()
            raise ServerStartError(f"recording server does not answer: {exc}") from exc
        self.hits.clear()
        self.headers.clear()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> RecordingServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
