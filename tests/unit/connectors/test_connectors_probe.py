"""Test connection without real servers: local folders, refusals, time limits, the report model.

The SFTP and S3 steps against real servers are in tests/integration/test_probe.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.local import LocalConfig
from connectors.netguard import AddressGuard
from connectors.probe import ProbeReport, StepStatus, probe
from connectors.s3 import S3Config
from connectors.sftp import SftpConfig

PASSWORD = "correct horse battery staple"
PIN = "SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ"


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that accepts TCP connections and never says a word."""
    accepted: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in accepted:
            conn.close()


def sftp(port: int, **fields: object) -> SftpConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "acme",
        "password": PASSWORD,
        "host_key": PIN,
        **fields,
    }
    return SftpConfig.model_validate(values)


def statuses(report: ProbeReport) -> list[tuple[str, StepStatus]]:
    return [(step.name, step.status) for step in report.steps]


# -- local folders --------------------------------------------------------------------------------


def test_a_readable_local_folder_passes_with_its_entry_count(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "b.csv").write_text("y")
    report = probe(LocalConfig(root=tmp_path))
    assert report.ok and report.failed_step is None
    assert statuses(report) == [("path", StepStatus.PASSED)]
    assert report.steps[0].detail == {"path": str(tmp_path), "entries": 2}
    assert report.target == f"file://{tmp_path}"


def test_a_missing_local_folder_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "inbox"
    report = probe(LocalConfig(root=missing))
    assert not report.ok and report.failed_step == "path"
    assert f"folder {str(missing)!r} does not exist" in report.steps[0].message
    assert report.steps[0].detail["error"] == "not_found"
    assert not missing.exists()  # a test creates nothing, even with create: true


def test_a_file_where_the_folder_should_be_fails(tmp_path: Path) -> None:
    (tmp_path / "inbox").write_text("")
    report = probe(LocalConfig(root=tmp_path / "inbox"))
    assert report.failed_step == "path"
    assert "is not a folder" in report.steps[0].message


# -- the address guard ----------------------------------------------------------------------------


def test_a_refused_sftp_host_fails_at_resolve_and_nothing_else_runs(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    report = probe(sftp(port), AddressGuard(), timeout_seconds=5)
    assert statuses(report) == [
        ("resolve", StepStatus.FAILED),
        ("connect", StepStatus.SKIPPED),
        ("host_key", StepStatus.SKIPPED),
        ("authenticate", StepStatus.SKIPPED),
        ("list", StepStatus.SKIPPED),
    ]
    resolve = report.steps[0]
    assert resolve.detail["error"] == "address_refused"
    assert resolve.detail["address"] == "127.0.0.1"
    assert "loopback" in resolve.message and "api.connect_allow" in resolve.message
    assert report.steps[1].message == "not run: the resolve step failed"
    time.sleep(0.3)  # give a stray connection time to show up
    assert accepted == []


def test_a_refused_s3_endpoint_fails_at_resolve(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    config = S3Config(bucket="acme-calls", endpoint_url=f"http://127.0.0.1:{port}")
    report = probe(config, AddressGuard(), timeout_seconds=5)
    assert statuses(report) == [
        ("resolve", StepStatus.FAILED),
        ("head_bucket", StepStatus.SKIPPED),
        ("list", StepStatus.SKIPPED),
    ]
    assert report.steps[0].detail["address"] == "127.0.0.1"
    time.sleep(0.3)
    assert accepted == []


def test_an_unknown_host_fails_at_resolve_naming_it() -> None:
    report = probe(sftp(22, host="no-such-host.test"), AddressGuard(getaddrinfo=rebinding([])))
    assert report.failed_step == "resolve"
    assert "cannot resolve 'no-such-host.test'" in report.steps[0].message
    assert report.steps[0].detail["error"] == "network"


def rebinding(answers: list[str]) -> Any:
    """A resolver answering each lookup with the next address (a DNS-rebinding name)."""
    calls: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        if len(calls) > len(answers):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        sockaddr = (answers[len(calls) - 1], port)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    getaddrinfo.calls = calls  # type: ignore[attr-defined]
    return getaddrinfo


def test_sftp_connects_to_the_address_resolve_checked_without_a_second_lookup(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    dns = rebinding(["127.0.0.1", "127.0.0.2"])  # a second lookup would get a refused address
    report = probe(
        sftp(port, host="sftp.customer.test"), AddressGuard(["127.0.0.1"], getaddrinfo=dns), 1
    )
    assert [s.status for s in report.steps[:2]] == [StepStatus.PASSED, StepStatus.PASSED]
    assert report.steps[1].detail["address"] == "127.0.0.1"
    assert dns.calls == ["sftp.customer.test"]
    assert len(accepted) == 1


def test_s3_checks_the_address_again_at_connection_time(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    # The name answers the resolve step with an allowed address, then rebinds to a refused one
    # for the connection: the connection is refused, nothing reaches either address.
    port, accepted = silent_server
    dns = rebinding(["127.0.0.1", "127.0.0.2"])
    config = S3Config(
        bucket="acme-calls",
        endpoint_url=f"http://rebind.customer.test:{port}",
        addressing_style="path",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="not-a-real-secret",
    )
    report = probe(config, AddressGuard(["127.0.0.1"], getaddrinfo=dns), 5)
    assert statuses(report) == [
        ("resolve", StepStatus.PASSED),
        ("head_bucket", StepStatus.FAILED),
        ("list", StepStatus.SKIPPED),
    ]
    assert report.steps[1].detail["error"] == "address_refused"
    assert "resolves to 127.0.0.2" in report.steps[1].message
    time.sleep(0.3)
    assert accepted == []


# -- time limits ----------------------------------------------------------------------------------


def test_a_server_that_never_answers_fails_within_the_limit(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    started = time.monotonic()
    report = probe(sftp(port), AddressGuard(["127.0.0.1"]), timeout_seconds=1.5)
    elapsed = time.monotonic() - started
    assert elapsed < 4  # the limit plus thread start-up, not the config's 10 s handshake
    assert report.failed_step == "host_key"
    assert [s.status for s in report.steps[:2]] == [StepStatus.PASSED, StepStatus.PASSED]
    assert report.steps[1].detail == {"address": "127.0.0.1", "port": port}
    assert len(accepted) == 1


# -- the report ------------------------------------------------------------------------------------


def test_a_secret_is_scrubbed_wherever_it_would_appear(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    # Contrived (a user name equal to the password) to put the secret into every message.
    port, _ = silent_server
    report = probe(sftp(port, username=PASSWORD), AddressGuard(["127.0.0.1"]), 1)
    assert PASSWORD not in report.model_dump_json()
    assert report.target == f"sftp://**********@127.0.0.1:{port}/"


def test_the_report_is_an_api_model_with_described_fields() -> None:
    schema = ProbeReport.model_json_schema()
    step = schema["$defs"]["ProbeStep"]
    for fields in (schema["properties"], step["properties"]):
        for name, field in fields.items():
            assert field.get("description"), name
    assert set(step["required"]) >= {"name", "status", "ok", "seconds", "message"}
