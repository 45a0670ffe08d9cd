"""The SSRF guard: every address class, the allow-list, IPv6 forms of IPv4 and numeric tricks.

Name resolution is faked (or numeric-only), so nothing here reaches DNS; the connection tests
use loopback sockets only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.errors import AddressRefused, ConnectorError
from connectors.netguard import AddressGuard, guard_botocore_client, parse_address, refusal_reason
from connectors.s3 import S3Config, S3Store

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.7", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378::1", "Teredo"),
    ("100::1", "discard"),
    ("::127.0.0.1", "reserved"),
    ("64:ff9b:1::a", "NAT64"),
    # IPv6 forms of refused IPv4 addresses
    ("::ffff:127.0.0.1", "loopback, as IPv4-mapped"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("2002:7f00:1::1", "loopback, as 6to4"),
    ("2002:a9fe:a9fe::", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata service range), as NAT64"),
    ("64:ff9b::10.0.0.1", "private"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "11.0.0.1",
    "100.63.255.255",
    "100.128.0.1",
    "172.15.255.255",
    "172.32.0.1",
    "192.167.255.255",
    "169.253.255.255",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",
    "64:ff9b::8.8.8.8",
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_every_non_public_address_class_is_refused(address: str, reason: str) -> None:
    found = refusal_reason(parse_address(address))
    assert found is not None and reason in found
    with pytest.raises(AddressRefused) as info:
        AddressGuard().check("files.example.com", address)
    assert info.value.address == address
    assert info.value.kind == "address_refused"
    assert not info.value.retriable
    assert "files.example.com" in str(info.value) and address in str(info.value)
    assert "api.connect_allow" in str(info.value)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(parse_address(address)) is None
    AddressGuard().check("files.example.com", address)


# -- the allow-list -------------------------------------------------------------------------------


def test_an_allowed_single_address_passes_and_its_neighbour_does_not() -> None:
    guard = AddressGuard(["127.0.0.1"])
    guard.check("localhost", "127.0.0.1")
    with pytest.raises(AddressRefused):
        guard.check("localhost", "127.0.0.2")


def test_an_allowed_block_covers_its_addresses_only() -> None:
    guard = AddressGuard(["10.20.0.0/16", "169.254.169.254"])
    guard.check("sftp.internal", "10.20.3.4")
    guard.check("metadata", "169.254.169.254")
    for address in ("10.21.0.1", "192.168.0.1", "169.254.169.253"):
        with pytest.raises(AddressRefused):
            guard.check("other", address)


def test_an_ipv4_allow_entry_covers_the_ipv6_forms_of_its_addresses() -> None:
    guard = AddressGuard(["127.0.0.0/8"])
    for address in ("::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::127.0.0.1"):
        guard.check("h", address)
    with pytest.raises(AddressRefused):
        guard.check("h", "::1")  # IPv6 loopback is another address


def test_an_ipv6_allow_entry_does_not_cover_ipv4() -> None:
    guard = AddressGuard(["::1", "fd00::/8"])
    guard.check("h", "::1")
    guard.check("h", "fd12::5")
    with pytest.raises(AddressRefused):
        guard.check("h", "127.0.0.1")


def test_host_bits_in_an_allow_block_are_accepted() -> None:
    assert [str(n) for n in AddressGuard(["10.1.2.3/16"]).allow] == ["10.1.0.0/16"]


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "", "1.2.3"])
def test_a_bad_allow_entry_is_refused_with_its_value(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or CIDR block"):
        AddressGuard([entry])


# -- resolving -----------------------------------------------------------------------------------


def fake_dns(table: dict[str, list[str]]) -> Any:
    """A getaddrinfo answering from ``table`` (unknown names: NXDOMAIN)."""

    def getaddrinfo(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in table[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    return getaddrinfo


def test_resolve_returns_every_address_once_in_resolver_order() -> None:
    dns = fake_dns({"files.example.com": ["93.184.215.14", "2606:2800:21f::1", "93.184.215.14"]})
    guard = AddressGuard(getaddrinfo=dns)
    assert guard.resolve("files.example.com", 22) == ["93.184.215.14", "2606:2800:21f::1"]


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    dns = fake_dns({"rebind.example.com": ["93.184.215.14", "169.254.169.254"]})
    with pytest.raises(AddressRefused) as info:
        AddressGuard(getaddrinfo=dns).resolve("rebind.example.com", 443)
    assert info.value.address == "169.254.169.254"
    assert "rebind.example.com resolves to 169.254.169.254" in str(info.value)


def test_an_unknown_name_raises_gaierror() -> None:
    with pytest.raises(socket.gaierror):
        AddressGuard(getaddrinfo=fake_dns({})).resolve("nowhere.example.com", 22)


def numeric_only(host: str, port: int, family: int = 0, type_: int = 0, proto: int = 0) -> Any:
    """The real getaddrinfo, kept off DNS: only what the C library parses as a number."""
    return socket.getaddrinfo(host, port, family, type_, proto, socket.AI_NUMERICHOST)


@pytest.mark.parametrize(
    "trick",
    ["2130706433", "0x7f.1", "0x7f000001", "0177.0.0.1", "017700000001", "127.1", "0x7f.0.0.1"],
)
def test_numeric_spellings_of_loopback_are_refused(trick: str) -> None:
    try:
        accepted = numeric_only(trick, 22, 0, socket.SOCK_STREAM)
    except socket.gaierror:
        accepted = []
    guard = AddressGuard(getaddrinfo=numeric_only)
    if not accepted:  # this C library does not read it as an address: nothing to connect to
        with pytest.raises(socket.gaierror):
            guard.resolve(trick, 22)
        return
    assert {a[4][0] for a in accepted} == {"127.0.0.1"}
    with pytest.raises(AddressRefused) as info:
        guard.resolve(trick, 22)
    assert info.value.address == "127.0.0.1"
    assert info.value.host == trick


@pytest.mark.parametrize("literal", ["::ffff:127.0.0.1", "::ffff:7f00:1", "[::1]"])
def test_ipv6_literal_forms_of_loopback_are_refused_or_unresolvable(literal: str) -> None:
    guard = AddressGuard(getaddrinfo=numeric_only)
    with pytest.raises((AddressRefused, socket.gaierror)):
        guard.resolve(literal, 22)


# -- connecting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    """A loopback listening socket that accepts nothing by itself."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.3)
        yield server


def connections_seen(server: socket.socket) -> int:
    """Count the connections waiting to be accepted."""
    seen = 0
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return seen
        conn.close()
        seen += 1


def test_connect_goes_to_the_checked_address_not_a_second_lookup() -> None:
    # The name exists only in the guard's resolver: had anything resolved it again, the
    # connection would fail.
    dns = fake_dns({"sftp.customer.test": ["127.0.0.1"]})
    guard = AddressGuard(["127.0.0.1"], getaddrinfo=dns)
    with listener() as server:
        port = server.getsockname()[1]
        with guard.connect("sftp.customer.test", port, 2.0) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        assert connections_seen(server) == 1


def test_a_refused_address_gets_no_connection_at_all() -> None:
    dns = fake_dns({"sftp.customer.test": ["127.0.0.1"]})
    with listener() as server:
        port = server.getsockname()[1]
        with pytest.raises(AddressRefused):
            AddressGuard(getaddrinfo=dns).connect("sftp.customer.test", port, 2.0)
        assert connections_seen(server) == 0


def test_connect_tries_the_next_checked_address_when_one_is_down() -> None:
    with listener() as server:  # nothing listens on 127.0.0.3: refused at once
        port = server.getsockname()[1]
        dns = fake_dns({"two.test": ["127.0.0.3", "127.0.0.1"]})
        guard = AddressGuard(["127.0.0.0/8"], getaddrinfo=dns)
        with guard.connect("two.test", port, 2.0) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)


# -- the S3 client hook --------------------------------------------------------------------------


def test_the_botocore_hook_refuses_an_object_it_does_not_know() -> None:
    with pytest.raises(RuntimeError, match="refusing to connect unguarded"):
        guard_botocore_client(object(), AddressGuard())


def s3_config(port: int, **fields: Any) -> S3Config:
    return S3Config(
        bucket="acme-calls",
        endpoint_url=f"http://objects.customer.test:{port}",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="not-a-real-secret",
        addressing_style="path",
        connect_timeout_seconds=1,
        read_timeout_seconds=1,
        max_attempts=1,
        **fields,
    )


def test_a_guarded_s3_store_refuses_a_private_endpoint_without_connecting() -> None:
    dns = fake_dns({"objects.customer.test": ["127.0.0.1"]})
    with listener() as server:
        port = server.getsockname()[1]
        store = S3Store(s3_config(port), AddressGuard(getaddrinfo=dns))
        with pytest.raises(AddressRefused) as info:
            store.connect()
        assert info.value.address == "127.0.0.1"
        assert "not-a-real-secret" not in str(info.value)
        assert connections_seen(server) == 0


def test_a_guarded_s3_client_only_touches_its_own_connections() -> None:
    guarded = S3Store(s3_config(9), AddressGuard()).open_client()
    plain = S3Store(s3_config(9)).open_client()
    g: Any = guarded
    p: Any = plain
    guarded_pools = g._endpoint.http_session._pool_classes_by_scheme
    plain_pools = p._endpoint.http_session._pool_classes_by_scheme
    assert guarded_pools["https"].__name__ == "GuardedAWSHTTPSConnectionPool"
    assert guarded_pools["http"].ConnectionCls.guard is not None
    assert plain_pools["https"].__name__ == "AWSHTTPSConnectionPool"


# -- which host an S3 configuration connects to --------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "host"),
    [
        ({"region": "eu-west-1"}, "acme-calls.s3.eu-west-1.amazonaws.com"),
        ({"region": "eu-west-1", "addressing_style": "path"}, "s3.eu-west-1.amazonaws.com"),
        ({"endpoint_url": "https://storage.googleapis.com", "region": "auto"}, None),
        ({"endpoint_url": "http://10.1.2.3:9000", "addressing_style": "path"}, "10.1.2.3"),
    ],
)
def test_the_request_host_is_botocores_own_endpoint_resolution(
    fields: dict[str, Any], host: str | None
) -> None:
    url = S3Store(S3Config(bucket="acme-calls", **fields)).request_url()
    parsed = urllib.parse.urlsplit(url)
    if host is None:  # GCS: the endpoint host, the bucket in the host or the path
        assert parsed.hostname is not None
        assert parsed.hostname.endswith("storage.googleapis.com")
    else:
        assert parsed.hostname == host
    assert "Signature" not in url  # nothing signed: no credentials needed, none leaked


# -- TLS through a guarded connection -------------------------------------------------------------


def self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``name`` and its key; return (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[tuple[int, list[str | None]]]:
    """A loopback HTTPS server answering 200 to one request per connection; records SNI names."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []

    def record(_sock: Any, name: str | None, _context: Any) -> None:
        names.append(name)

    context.sni_callback = record
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = server.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(2)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], names
    finally:
        stop.set()
        thread.join()
        server.close()


def test_https_through_the_guard_verifies_the_certificate_for_the_host_name(
    tmp_path: Path,
) -> None:
    # The socket goes to the checked 127.0.0.1; TLS still sends the name as SNI and checks the
    # certificate against it (a certificate for another name is refused).
    name = "objects.customer.test"
    cert, key = self_signed(tmp_path, name)
    guard = AddressGuard(["127.0.0.1"], getaddrinfo=fake_dns({name: ["127.0.0.1"]}))
    with tls_server(cert, key) as (port, names):
        config = s3_config(0).model_copy(
            update={"endpoint_url": f"https://{name}:{port}", "ca_bundle": cert}
        )
        store = S3Store(config, guard)
        store.open_client()
        assert store.head_bucket() is None  # 200, no region header
        assert names == [name]
    other_cert, other_key = self_signed(tmp_path, "someone-else.test")
    with tls_server(other_cert, other_key) as (port, names):
        config = s3_config(0).model_copy(
            update={"endpoint_url": f"https://{name}:{port}", "ca_bundle": other_cert}
        )
        store = S3Store(config, guard)
        store.open_client()
        with pytest.raises(ConnectorError, match=r"doesn't match 'someone-else\.test'"):
            store.head_bucket()
