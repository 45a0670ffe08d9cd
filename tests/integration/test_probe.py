"""Test connection and the address guard against the real OpenSSH sftp and moto S3 servers.

Each failing step an operator can cause is reported on the right step with a message naming
what to fix (wrong host key, no pinned key, wrong password, closed port, missing bucket, bad
secret, a denying policy), and a loopback target that is not allow-listed is refused at
``resolve`` before any TCP connection. The stores built with a guard connect to the address the
guard checked: the host names used below exist only in the guard's resolver, so a second
lookup by paramiko or urllib3 would fail.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import paramiko
import pytest
from servers.s3 import S3Server
from servers.sshd import SftpServer
from support import free_port, s3_config, sftp_config

from connectors.errors import AddressRefused, HostKeyMismatch
from connectors.netguard import AddressGuard
from connectors.probe import ProbeReport, StepStatus, probe
from connectors.registry import open_store
from connectors.s3 import S3Store
from connectors.sftp import SftpStore

LOOPBACK = AddressGuard(["127.0.0.0/8", "::1"])
SFTP_STEPS = ["resolve", "connect", "host_key", "authenticate", "list"]
S3_STEPS = ["resolve", "head_bucket", "list"]


def outcome(report: ProbeReport) -> list[tuple[str, StepStatus]]:
    return [(s.name, s.status) for s in report.steps]


def failed_at(report: ProbeReport, name: str) -> list[tuple[str, StepStatus]]:
    """The outcome a report failing at step ``name`` has: passed, failed, then skipped."""
    names = [s.name for s in report.steps]
    at = names.index(name)
    return [
        (n, StepStatus.PASSED if i < at else StepStatus.FAILED if i == at else StepStatus.SKIPPED)
        for i, n in enumerate(names)
    ]


def only_in_guard_dns(names: dict[str, str]) -> Any:
    """A getaddrinfo that knows ``names`` (and IP literals) and nothing else."""

    def getaddrinfo(host: str, port: int, *args: Any) -> Any:
        return socket.getaddrinfo(names.get(host, host), port, *args[:3], socket.AI_NUMERICHOST)

    return getaddrinfo


@contextlib.contextmanager
def watched_port() -> Iterator[tuple[int, socket.socket]]:
    """A loopback port with a listener whose backlog shows every connection attempt."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.5)
        yield server.getsockname()[1], server


def attempts(server: socket.socket) -> int:
    """Count the TCP connections the listener received."""
    seen = 0
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return seen
        conn.close()
        seen += 1


# -- SFTP -----------------------------------------------------------------------------------------


def test_every_sftp_step_passes_on_a_good_config(sftp_server: SftpServer) -> None:
    (sftp_server.upload_dir("cs_pw") / "probe-a.csv").write_text("a")
    report = probe(sftp_config(sftp_server), LOOPBACK)
    assert report.ok, report.model_dump_json(indent=1)
    assert [s.name for s in report.steps] == SFTP_STEPS
    assert all(s.status is StepStatus.PASSED and s.ok for s in report.steps)
    steps = {s.name: s for s in report.steps}
    assert steps["resolve"].detail["addresses"] == ["127.0.0.1"]
    assert steps["connect"].detail == {"address": "127.0.0.1", "port": sftp_server.port}
    assert steps["host_key"].detail["fingerprint"] == sftp_server.host_key_fingerprint
    assert steps["authenticate"].detail["method"] == "password"
    assert steps["list"].detail["root"] == sftp_server.remote_upload_dir()
    assert steps["list"].detail["entries"] >= 1
    assert report.seconds < 10


def test_key_authentication_passes_too(sftp_server: SftpServer) -> None:
    report = probe(sftp_config(sftp_server, "cs_key"), LOOPBACK)
    assert report.ok, report.model_dump_json(indent=1)
    assert report.steps[3].detail["method"] == "private key"


def test_a_wrong_host_key_fails_showing_presented_and_pinned(sftp_server: SftpServer) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(
        str(sftp_server.users["cs_key"].private_key_path)
    )
    pin = f"{other.get_name()} {other.get_base64()}"
    report = probe(sftp_config(sftp_server, host_key=pin), LOOPBACK)
    assert outcome(report) == failed_at(report, "host_key")
    step = report.steps[2]
    assert step.detail["error"] == "host_key"
    assert step.detail["fingerprint"] == sftp_server.host_key_fingerprint
    assert step.detail["pinned"] != sftp_server.host_key_fingerprint
    assert sftp_server.host_key_fingerprint in step.message
    assert step.detail["pinned"] in step.message
    assert "refusing to connect" in step.message


def test_no_pinned_key_returns_the_fingerprint_and_key_line_to_pin(
    sftp_server: SftpServer,
) -> None:
    report = probe(sftp_config(sftp_server, host_key=""), LOOPBACK)
    assert outcome(report) == failed_at(report, "host_key")
    step = report.steps[2]
    assert step.detail["fingerprint"] == sftp_server.host_key_fingerprint
    assert step.detail["public_key"] == sftp_server.host_key_line
    assert step.detail["pinned"] is None
    assert "pins none yet" in step.message and "set host_key" in step.message
    # ... and the pin it returned works.
    pinned = sftp_config(sftp_server, host_key=step.detail["public_key"])
    assert probe(pinned, LOOPBACK).ok


def test_the_store_refuses_an_unpinned_server_with_the_key_to_pin(
    sftp_server: SftpServer,
) -> None:
    with pytest.raises(HostKeyMismatch) as info:
        SftpStore(sftp_config(sftp_server, host_key="")).connect()
    assert info.value.fingerprint == sftp_server.host_key_fingerprint
    assert info.value.public_key == sftp_server.host_key_line


def test_a_wrong_password_fails_authentication_without_echoing_it(
    sftp_server: SftpServer,
) -> None:
    wrong = "Wr0ng-but-s3cret-Passw0rd"
    report = probe(sftp_config(sftp_server, password=wrong), LOOPBACK)
    assert outcome(report) == failed_at(report, "authenticate")
    step = report.steps[3]
    user = sftp_server.users["cs_pw"].name
    assert step.detail["error"] == "auth"
    assert f"rejected password authentication for user {user!r}" in step.message
    assert wrong not in report.model_dump_json()


def test_a_closed_port_fails_at_connect(sftp_server: SftpServer) -> None:
    port = free_port()
    report = probe(sftp_config(sftp_server, port=port), LOOPBACK)
    assert outcome(report) == failed_at(report, "connect")
    step = report.steps[1]
    assert f"no TCP connection to 127.0.0.1:{port}" in step.message
    assert "refused" in step.message.lower()


def test_a_missing_root_fails_at_list_naming_it(sftp_server: SftpServer) -> None:
    report = probe(sftp_config(sftp_server, root="/no-such-folder"), LOOPBACK)
    assert outcome(report) == failed_at(report, "list")
    assert "folder '/no-such-folder' does not exist" in report.steps[4].message


def test_loopback_not_allow_listed_is_refused_before_any_connection(
    sftp_server: SftpServer,
) -> None:
    with watched_port() as (port, listener):
        report = probe(sftp_config(sftp_server, port=port), AddressGuard(["10.0.0.0/8"]))
        assert outcome(report) == failed_at(report, "resolve")
        assert report.steps[0].detail["error"] == "address_refused"
        assert "loopback" in report.steps[0].message
        assert attempts(listener) == 0
    # The real server, too: refused at resolve, not at the host key.
    report = probe(sftp_config(sftp_server), AddressGuard())
    assert report.failed_step == "resolve"


def test_a_guarded_sftp_store_connects_to_the_address_it_checked(
    sftp_server: SftpServer,
) -> None:
    # localhost is in /etc/hosts; "sftp.customer.test" exists only in the guard's resolver, so
    # the connection works only if paramiko got the socket the guard opened.
    names = {"sftp.customer.test": "127.0.0.1", "localhost": "127.0.0.1"}
    guard = AddressGuard(["127.0.0.1"], getaddrinfo=only_in_guard_dns(names))
    for host in ("localhost", "sftp.customer.test"):
        store = open_store(sftp_config(sftp_server, host=host), guard)
        assert isinstance(store, SftpStore)
        with store:
            transport: Any = store._transport
            assert transport.sock.getpeername() == ("127.0.0.1", sftp_server.port)
            list(store.iter_entries())  # the session works
        report = probe(sftp_config(sftp_server, host=host), guard)
        assert report.ok, report.model_dump_json(indent=1)


def test_a_guarded_sftp_store_refuses_loopback_before_connecting(
    sftp_server: SftpServer,
) -> None:
    with watched_port() as (port, listener):
        store = open_store(sftp_config(sftp_server, host="localhost", port=port), AddressGuard())
        with pytest.raises(AddressRefused) as info:
            store.connect()
        assert info.value.address == "127.0.0.1"
        assert attempts(listener) == 0


def test_a_config_file_store_without_guard_still_reaches_loopback(
    sftp_server: SftpServer,
) -> None:
    with open_store(sftp_config(sftp_server)) as store:
        assert isinstance(store, SftpStore)


# -- S3 -------------------------------------------------------------------------------------------


def test_every_s3_step_passes_on_a_good_config(s3_server: S3Server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="inbox/a.csv", Body=b"a")
    report = probe(s3_config(s3_server, s3_bucket, prefix="inbox"), LOOPBACK)
    assert report.ok, report.model_dump_json(indent=1)
    assert [s.name for s in report.steps] == S3_STEPS
    steps = {s.name: s for s in report.steps}
    assert steps["resolve"].detail["endpoint"] == s3_server.endpoint_url
    assert steps["resolve"].detail["addresses"] == ["127.0.0.1"]
    assert steps["head_bucket"].detail["bucket"] == s3_bucket
    assert steps["list"].detail == {"prefix": "inbox/", "found": True}
    assert "at least one object" in steps["list"].message


def test_an_empty_prefix_lists_fine(s3_server: S3Server, s3_bucket: str) -> None:
    report = probe(s3_config(s3_server, s3_bucket, prefix="nothing-here"), LOOPBACK)
    assert report.ok
    assert report.steps[2].detail["found"] is False


def test_a_missing_bucket_fails_at_head_bucket(s3_server: S3Server) -> None:
    report = probe(s3_config(s3_server, "cs-no-such-bucket-here"), LOOPBACK)
    assert outcome(report) == failed_at(report, "head_bucket")
    step = report.steps[1]
    assert step.detail["error"] == "not_found"
    assert "bucket 'cs-no-such-bucket-here' does not exist" in step.message


def test_a_bad_secret_fails_at_head_bucket_as_credentials(
    s3_server: S3Server, s3_bucket: str
) -> None:
    wrong = "not-the-secret-of-this-key-0123456789"
    report = probe(s3_config(s3_server, s3_bucket, secret_access_key=wrong), LOOPBACK)
    assert outcome(report) == failed_at(report, "head_bucket")
    step = report.steps[1]
    assert step.detail["error"] == "auth"
    assert "SignatureDoesNotMatch" in step.message
    assert "secret_access_key does not belong" in step.message
    assert wrong not in report.model_dump_json()


def test_an_unknown_key_id_fails_at_head_bucket_naming_it(
    s3_server: S3Server, s3_bucket: str
) -> None:
    report = probe(s3_config(s3_server, s3_bucket, access_key_id="AKIANOSUCHKEY0000000"), LOOPBACK)
    assert report.failed_step == "head_bucket"
    assert report.steps[1].detail["error"] == "auth"
    assert "'AKIANOSUCHKEY0000000'" in report.steps[1].message


def test_a_key_without_list_permission_fails_as_access_denied(
    s3_server: S3Server, s3_bucket: str
) -> None:
    key_id, secret = s3_server.restricted_key(["s3:GetObject"])
    config = s3_config(s3_server, s3_bucket, access_key_id=key_id, secret_access_key=secret)
    report = probe(config, LOOPBACK)
    assert report.failed_step == "head_bucket"
    assert report.steps[1].detail["error"] == "access_denied"
    assert "access denied to bucket" in report.steps[1].message


def test_a_closed_s3_port_fails_at_head_bucket_as_unreachable(s3_server: S3Server) -> None:
    config = s3_config(s3_server, "any-bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    report = probe(config, LOOPBACK)
    assert outcome(report) == failed_at(report, "head_bucket")
    assert report.steps[1].detail["error"] == "network"
    assert "endpoint unreachable" in report.steps[1].message


def test_an_s3_endpoint_on_loopback_not_allow_listed_is_refused_before_any_connection(
    s3_server: S3Server, s3_bucket: str
) -> None:
    with watched_port() as (port, listener):
        endpoint = f"http://127.0.0.1:{port}"
        report = probe(s3_config(s3_server, s3_bucket, endpoint_url=endpoint), AddressGuard())
        assert outcome(report) == failed_at(report, "resolve")
        assert report.steps[0].detail["address"] == "127.0.0.1"
        with pytest.raises(AddressRefused):
            S3Store(
                s3_config(s3_server, s3_bucket, endpoint_url=endpoint), AddressGuard()
            ).connect()
        assert attempts(listener) == 0


def test_a_guarded_s3_store_connects_to_the_address_it_checked(
    s3_server: S3Server, s3_bucket: str
) -> None:
    # The name exists only in the guard's resolver (.test never resolves; "localhost." makes
    # moto read the bucket from the path): urllib3 connecting by name could not resolve it,
    # the guarded pool connects to the checked 127.0.0.1.
    s3_server.client().put_object(Bucket=s3_bucket, Key="a.csv", Body=b"abc")
    guard = AddressGuard(
        ["127.0.0.1"], getaddrinfo=only_in_guard_dns({"localhost.customer.test": "127.0.0.1"})
    )
    endpoint = f"http://localhost.customer.test:{s3_server.port}"
    config = s3_config(s3_server, s3_bucket, endpoint_url=endpoint)
    store = open_store(config, guard)
    assert isinstance(store, S3Store)
    with store:
        assert [f.path for f in store.iter_entries()] == ["a.csv"]
        with store.open("a.csv") as body:
            assert body.read() == b"abc"
    report = probe(config, guard)
    assert report.ok, report.model_dump_json(indent=1)
    # Without the guard, the same name does not resolve at all.
    assert probe(config, None).failed_step == "resolve"
