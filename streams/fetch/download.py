"""Stream a recording from an http(s) URL into the media store, behind the SSRF guard.

Contract of :meth:`Downloader.fetch`: one attempt. Every hop (the URL and each redirect, at
most ``max_redirects``) is checked by :class:`~connectors.netguard.AddressGuard`: a host name is
resolved once by the guard and the connection goes to one of the checked addresses (aiohttp is
given a resolver that is the guard), an IP literal is checked as it is. Redirects are followed
by hand, never by aiohttp, so a redirect to a private address is refused (``address_refused``)
even when the first host is allowed, and the auth header goes only to the template's origin.
The answer must be 2xx, of an allowed media type and no larger than ``max_bytes`` (by its
Content-Length and by the bytes counted while streaming, which stops the copy at once). The body
is streamed into :meth:`~streams.media.MediaStore.put_media` (bounded memory, SHA-256) from a
worker thread; a body shorter than its Content-Length is ``truncated`` (retryable) and leaves
nothing in the store. Every failure is a :class:`~streams.fetch.policy.FetchFailed`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import ipaddress
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from connectors.errors import AddressRefused
from connectors.netguard import AddressGuard
from streams.fetch.policy import (
    FetchFailed,
    check_url,
    media_type_allowed,
    recording_name,
    redact,
    same_origin,
    status_failure,
)
from streams.fetch.settings import RecordingFetchSettings
from streams.media import READ_BYTES, MediaRejected, MediaStore, StoredMedia

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class GuardResolver(AbstractResolver):
    """aiohttp resolver that answers only addresses the guard allows (raises
    :class:`~connectors.errors.AddressRefused` otherwise)."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await asyncio.to_thread(self.guard.resolve, host, port)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A recording now in the media store."""

    stored: StoredMedia
    media_type: str
    url: str
    """The URL the body came from (after redirects)."""
    http_status: int


class Downloader:
    """One HTTP client for every fetch of the process (see the module doc)."""

    def __init__(self, guard: AddressGuard, media: MediaStore, threads: int = 8) -> None:
        self.guard = guard
        self.media = media
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="recording-fetch")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the client (no proxy from the environment: the guard must see the target)."""
        connector = aiohttp.TCPConnector(
            resolver=GuardResolver(self.guard), use_dns_cache=False, limit=64
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False
        )

    async def stop(self) -> None:
        """Close the client and the copy threads."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def fetch(
        self,
        url: str,
        settings: RecordingFetchSettings,
        *,
        tenant: str,
        file_id: str,
        when: dt.datetime,
        auth_origin: str | None,
    ) -> Fetched:
        """Fetch ``url`` into the media store under ``tenant``/``file_id`` (one attempt)."""
        if self._session is None:
            raise RuntimeError("Downloader is not started")
        with _translated(url):
            response = await self._open(url, settings, auth_origin)
        try:
            media_type = response.headers.get("Content-Type", "application/octet-stream")
            final = str(response.url)
            name = recording_name(final, media_type)
            loop = asyncio.get_running_loop()
            body = cast(IO[bytes], _BodyReader(response, loop, settings.max_bytes, final))
            try:
                # Store errors (an outage, a full disk) propagate as they are: the caller
                # retries those without counting an attempt against the recording.
                stored = await loop.run_in_executor(
                    self._threads,
                    lambda: self.media.put_media(tenant, file_id, name, body, when=when),
                )
            except MediaRejected as exc:
                raise FetchFailed(exc.reason, f"{redact(final)}: {exc}", retryable=False) from exc
        finally:
            response.release()
        kind = media_type.split(";", 1)[0].strip().lower()
        return Fetched(stored, kind, final, response.status)

    async def _open(
        self, url: str, settings: RecordingFetchSettings, auth_origin: str | None
    ) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects by hand, each hop guarded; return a 2xx answer of
        an allowed type and size (the caller releases it)."""
        assert self._session is not None  # noqa: S101 - checked by fetch
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.timeout_seconds,
            sock_connect=settings.timeout_seconds,
            sock_read=settings.timeout_seconds,
        )
        for _hop in range(settings.max_redirects + 1):
            check_url(url)
            self._check_literal(url)
            headers = {"Accept": ", ".join(settings.allowed_media_types)}
            if (
                auth_origin is not None
                and settings.auth_header_name is not None
                and settings.auth_header_value is not None
                and same_origin(url, auth_origin)
            ):
                headers[settings.auth_header_name] = settings.auth_header_value.get_secret_value()
            response = await self._session.get(
                url, headers=headers, allow_redirects=False, timeout=timeout
            )
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                response.release()
                if not location:
                    raise FetchFailed(
                        "http_error",
                        f"GET {redact(url)}: HTTP {response.status} without a Location",
                        retryable=False,
                        http_status=response.status,
                    )
                url = urljoin(url, location)
                continue
            if not 200 <= response.status < 300:
                failure = status_failure(response.status, url, response.headers)
                response.release()
                raise failure
            try:
                self._check_answer(response, settings, url)
            except FetchFailed:
                response.release()
                raise
            return response
        raise FetchFailed(
            "too_many_redirects",
            f"more than {settings.max_redirects} redirects (max_redirects)",
            retryable=False,
        )

    def _check_literal(self, url: str) -> None:
        """Check a hop whose host is an IP literal (aiohttp does not resolve those)."""
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        self.guard.check(host, host)

    @staticmethod
    def _check_answer(
        response: aiohttp.ClientResponse, settings: RecordingFetchSettings, url: str
    ) -> None:
        media_type = response.headers.get("Content-Type")
        if not media_type_allowed(media_type, settings.allowed_media_types):
            raise FetchFailed(
                "unsupported_media",
                f"GET {redact(url)}: Content-Type {media_type!r} is not one of "
                f"{', '.join(settings.allowed_media_types)} (allowed_media_types)",
                retryable=False,
                http_status=response.status,
            )
        length = response.content_length
        if length is not None and length > settings.max_bytes:
            raise FetchFailed(
                "too_large",
                f"GET {redact(url)}: Content-Length {length} exceeds max_bytes "
                f"({settings.max_bytes})",
                retryable=False,
                http_status=response.status,
            )


class _BodyReader(io.RawIOBase):
    """A blocking file object over an aiohttp body, for the media store's worker thread:
    each read runs on the event loop. Counts bytes, enforces ``max_bytes`` and the
    Content-Length."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        loop: asyncio.AbstractEventLoop,
        max_bytes: int,
        url: str,
    ) -> None:
        super().__init__()
        self.response = response
        self.loop = loop
        self.max_bytes = max_bytes
        self.url = url
        self.expected = response.content_length
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), READ_BYTES)
        chunk = asyncio.run_coroutine_threadsafe(self._next(want), self.loop).result()
        view[: len(chunk)] = chunk
        return len(chunk)

    async def _next(self, n: int) -> bytes:
        with _translated(self.url, self.response.status):
            chunk = await self.response.content.read(n)
        self.count += len(chunk)
        if self.count > self.max_bytes:
            raise FetchFailed(
                "too_large",
                f"GET {redact(self.url)}: body longer than max_bytes ({self.max_bytes})",
                retryable=False,
                http_status=self.response.status,
            )
        if not chunk and self.expected is not None and self.count < self.expected:
            raise self._truncated()
        return chunk

    def _truncated(self) -> FetchFailed:
        return FetchFailed(
            "truncated",
            f"GET {redact(self.url)}: body ended after {self.count} of {self.expected} bytes",
            retryable=True,
            http_status=self.response.status,
        )


@contextmanager
def _translated(url: str, status: int | None = None) -> Iterator[None]:
    """Turn the HTTP client's and the guard's exceptions into :class:`FetchFailed` (``status``:
    of the answer whose body was being read)."""
    where = f"GET {redact(url)}"
    try:
        yield
    except FetchFailed:
        raise
    except AddressRefused as exc:
        raise FetchFailed("address_refused", f"{where}: {exc}", retryable=False) from exc
    except aiohttp.InvalidURL as exc:
        raise FetchFailed("bad_url", f"{where}: invalid URL: {exc}", retryable=False) from exc
    except aiohttp.ClientPayloadError as exc:
        raise FetchFailed(
            "truncated", f"{where}: body incomplete: {exc}", retryable=True, http_status=status
        ) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise FetchFailed(
            "timeout", f"{where}: timed out", retryable=True, http_status=status
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchFailed(
            "connection_failed",
            f"{where}: {type(exc).__name__}: {exc}",
            retryable=True,
            http_status=status,
        ) from exc
