"""The SSRF guard: which addresses connectors created through the API may connect to.

A connector created through the API points callstream at a host its author chose. Without a
guard, "test connection" and the poller would reach whatever that name resolves to: the cloud
metadata service (169.254.169.254), the broker, the database, anything on the operator's private
network. :class:`AddressGuard` refuses loopback, link-local, private (RFC 1918, ``fc00::/7``,
CGNAT ``100.64.0.0/10``), multicast, unspecified, reserved, documentation and benchmarking
addresses, and the IPv6 forms that carry one of them (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002::/16``, NAT64 ``64:ff9b::/96``), unless the operator's allow-list (settings
``api.connect_allow``) covers the address. A host name is refused when *any* of its addresses
is refused, so a name cannot mix a public and a private answer.

**The address checked is the address connected to.** Checking a name and then letting a client
library resolve it again lets a DNS-rebinding name answer a public address to the check and a
private one to the connection. So the guard resolves once (``getaddrinfo``: numeric tricks like
``2130706433`` or ``0x7f.1`` come back as the ``127.0.0.1`` they mean), checks every address,
and the caller connects to one of those IP literals itself:

- **SFTP** (:class:`~connectors.sftp.SftpStore` with a guard): :meth:`AddressGuard.connect`
  opens the TCP socket to a checked address and paramiko runs SSH over that socket.
- **S3** (:class:`~connectors.s3.S3Store` with a guard): boto3 sends through botocore's
  ``URLLib3Session``, whose urllib3 pool managers build connection pools from a per-session
  ``pool_classes_by_scheme`` table. :func:`guard_botocore_client` replaces that table's
  entries, for this one client only, with subclasses of botocore's own pool and connection
  classes whose ``_new_conn`` resolves through the guard and connects to a checked IP literal
  (urllib3 then does no DNS lookup of its own). TLS still verifies the certificate against the
  host name and sends it as SNI, because only the socket's destination changes (the same
  approach as the ``advocate`` library for requests). Every connection the client opens, for
  every request, retry and redirect, goes through it. Nothing global is patched: other boto3
  clients in the process (the media store, config-file connectors) are untouched.

Residual gaps, stated plainly:

- The S3 hook uses two private attributes of botocore (``client._endpoint.http_session`` and
  its ``_pool_classes_by_scheme``/``_manager``). :func:`guard_botocore_client` checks they are
  there and raises :class:`RuntimeError` otherwise, so a botocore upgrade that moves them fails
  closed (no guarded client, no connection) rather than connecting unguarded; the unit and
  integration tests exercise the hook.
- A guarded S3 client ignores ``HTTP(S)_PROXY`` from the environment: through a proxy the
  proxy, not callstream, resolves the target name, so the guard could only check the proxy's
  own address. Operators who must egress through a proxy enforce the policy there.
- botocore retries a refused connection like any other connection failure (``max_attempts``
  tries, nothing is sent) before the store reports :class:`~connectors.errors.AddressRefused`.
- Name resolution itself (the DNS query) still happens: the guard stops connections, not
  lookups.

Connectors from the configuration file are the operator's own: they are built without a guard
and connect as they always did.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection as urllib3_create_connection

from connectors.errors import AddressRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
GetAddrInfo = Callable[..., list[tuple[Any, ...]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the reason. Everything else Python does not call
# globally routable is refused too, as "not globally routable".
_REFUSED: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata service range)"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared carrier-grade NAT (RFC 6598)"),
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (incl. broadcast)"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay anycast)"),
    (_V6("::1/128"), "loopback"),
    (_V6("::/128"), "unspecified"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fec0::/10"), "private (site-local)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "private (local-use NAT64)"),
    (_V6("100::/64"), "reserved (discard-only)"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments, Teredo)"),
    (_V6("::/8"), "reserved (incl. IPv4-compatible ::a.b.c.d)"),
)
_SIX_TO_FOUR = _V6("2002::/16")
_NAT64 = _V6("64:ff9b::/96")


def parse_address(text: str) -> IPAddress:
    """Parse an IP literal as ``getaddrinfo`` returns it (an IPv6 zone id is dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for or tunnels to, and how."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Return why the policy refuses ``ip`` (ignoring any allow-list), or None if it is public."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner, how = embedded
        reason = refusal_reason(inner)
        # Mapped: the same host; 6to4 and NAT64: a gateway forwards to that IPv4 address.
        return None if reason is None else f"{reason}, as {how} IPv6 {ip}"
    for network, reason in _REFUSED:
        if ip.version == network.version and ip in network:
            return reason
    if not ip.is_global or ip.is_multicast:
        return "not globally routable"
    return None


class AddressGuard:
    """The SSRF policy for connections to hosts chosen through the API (see the module doc).

    ``allow`` lists the IP addresses and CIDR blocks (settings ``api.connect_allow``) that may be
    reached although the policy refuses them (tests allow-list loopback; an operator may allow
    an internal SFTP server's subnet). An IPv4 entry also covers the IPv4-mapped, 6to4 and
    NAT64 IPv6 forms of its addresses. ``getaddrinfo`` is injectable for tests.

    Callers: :meth:`resolve` raises :class:`~connectors.errors.AddressRefused` (permanent:
    report it, do not retry) or :class:`OSError` (``socket.gaierror``: the name does not
    resolve, which may be transient); :meth:`connect` also raises :class:`OSError` when no
    checked address accepts the connection.
    """

    def __init__(
        self, allow: Sequence[str] = (), *, getaddrinfo: GetAddrInfo = socket.getaddrinfo
    ) -> None:
        networks: list[IPNetwork] = []
        for item in allow:
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR block") from exc
        self.allow: tuple[IPNetwork, ...] = tuple(networks)
        self._getaddrinfo = getaddrinfo

    def __repr__(self) -> str:
        return f"AddressGuard(allow={[str(n) for n in self.allow]!r})"

    def allows(self, ip: IPAddress) -> bool:
        """Tell whether the allow-list covers ``ip`` (or the IPv4 address it carries)."""
        candidates: list[IPAddress] = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded[0])
        return any(c.version == n.version and c in n for c in candidates for n in self.allow)

    def check(self, host: str, address: str) -> IPAddress:
        """Return ``address`` parsed if the policy lets ``host``'s connection go there, or raise
        :class:`~connectors.errors.AddressRefused`."""
        ip = parse_address(address)
        reason = refusal_reason(ip)
        if reason is not None and not self.allows(ip):
            named = host if host == address else f"{host} resolves to {address}, which"
            raise AddressRefused(
                f"{named} is a {reason} address: connections there are refused unless the "
                "operator's allow-list (api.connect_allow) covers it",
                host=host,
                address=address,
                reason=reason,
            )
        return ip

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses, every one checked (see the class)."""
        infos = self._getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        for address in addresses:
            self.check(host, address)
        return addresses

    def connect(
        self,
        host: str,
        port: int,
        timeout: float | None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """Open a TCP connection to one of ``host``'s checked addresses, in resolver order."""
        last: OSError | None = None
        for address in self.resolve(host, port):
            try:
                # An IP literal: create_connection's own getaddrinfo does no DNS lookup.
                return socket.create_connection((address, port), timeout, source_address)
            except OSError as exc:
                last = exc
        assert last is not None  # noqa: S101 - resolve() returns at least one address
        raise last


# -- boto3 / botocore ---------------------------------------------------------------------------


class _GuardedConnection:
    """``_new_conn`` of urllib3's HTTPConnection, connecting to a guard-checked IP literal."""

    guard: ClassVar[AddressGuard]
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        conn: Any = self  # the urllib3 connection this class is mixed into
        try:
            addresses = self.guard.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, conn, exc) from exc
        # AddressRefused propagates: botocore wraps it in HTTPClientError (see connectors.s3).
        failure: Exception | None = None
        for address in addresses:
            try:
                sock = urllib3_create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                failure = ConnectTimeoutError(
                    conn,
                    f"Connection to {self.host} ({address}) timed out. "
                    f"(connect timeout={self.timeout})",
                )
                failure.__cause__ = exc
            except OSError as exc:
                failure = NewConnectionError(
                    conn, f"Failed to establish a new connection to {address}: {exc}"
                )
                failure.__cause__ = exc
            else:
                sys.audit("http.client.connect", self, self.host, self.port)
                return sock
        assert failure is not None  # noqa: S101 - resolve() returns at least one address
        raise failure


# The [misc] ignores: botocore-stubs' AWSConnection and urllib3's HTTPConnection disagree on
# request/send signatures; botocore's own classes combine them the same way.
class _GuardedHTTPConnection(_GuardedConnection, AWSHTTPConnection):  # type: ignore[misc]
    pass


class _GuardedHTTPSConnection(_GuardedConnection, AWSHTTPSConnection):  # type: ignore[misc]
    pass


def guarded_pool_classes(guard: AddressGuard) -> dict[str, type[Any]]:
    """Return botocore's connection-pool classes for http and https, bound to ``guard``."""
    http = type("GuardedAWSHTTPConnection", (_GuardedHTTPConnection,), {"guard": guard})
    https = type("GuardedAWSHTTPSConnection", (_GuardedHTTPSConnection,), {"guard": guard})
    return {
        "http": type(
            "GuardedAWSHTTPConnectionPool", (AWSHTTPConnectionPool,), {"ConnectionCls": http}
        ),
        "https": type(
            "GuardedAWSHTTPSConnectionPool", (AWSHTTPSConnectionPool,), {"ConnectionCls": https}
        ),
    }


def guard_botocore_client(client: Any, guard: AddressGuard) -> None:
    """Make every connection a (not yet used) botocore client opens go through ``guard``.

    Raises :class:`RuntimeError` when botocore's internals are not the ones this was written
    for: the caller must not use the client then (fail closed, see the module doc).
    """
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    classes = getattr(session, "_pool_classes_by_scheme", None)
    manager = getattr(session, "_manager", None)
    shared = getattr(manager, "pool_classes_by_scheme", None) is classes
    if not isinstance(classes, dict) or set(classes) != {"http", "https"} or not shared:
        raise RuntimeError(
            "cannot install the address guard on this botocore client (botocore's "
            "URLLib3Session changed): refusing to connect unguarded"
        )
    if getattr(session, "_proxy_managers", None) or len(getattr(manager, "pools", ())):
        raise RuntimeError("the address guard must be installed before the client connects")
    # One dict per session, shared by its pool manager and any proxy manager made later.
    classes.update(guarded_pool_classes(guard))
