"""Test connection: check a store configuration step by step and say where it fails.

:func:`probe` runs the steps a connection goes through and returns a :class:`ProbeReport` (a
pydantic model the HTTP API serves as it is): each step with its outcome, duration, a message
for people and machine-readable details. It stops at the first failing step; the steps after it
are reported as ``skipped``.

- SFTP: ``resolve`` (DNS, and the address guard), ``connect`` (TCP, to a checked address),
  ``host_key`` (the server's key against the pinned one; when none is pinned yet the step fails
  and its details carry the fingerprint and the key line to pin), ``authenticate`` (password or
  private key), ``list`` (the configured root folder).
- S3: ``resolve`` (the endpoint's host as botocore builds it, AWS's own endpoints included, and
  the address guard), ``head_bucket`` (a missing bucket, bad credentials and a denying policy
  are told apart), ``list`` (one key under the prefix).
- Local folder: ``path`` (exists, is a folder, can be listed).
- Export connectors (``write=True``): SFTP ends with ``write`` (a probe file
  ``.callstream-probe-<hex>`` put into the root) and ``delete`` (it removed) instead of ``list``;
  S3 is ``resolve``, ``write`` (a probe object under the prefix), ``delete`` (an export key
  need not list or read). :func:`run_steps` runs other checks (the e-mail relay) the same way.

The probe is blocking (run it in a thread from async code) and bounded: every step runs with
the store's own timeouts cut to what is left of ``timeout_seconds``, and a step still running
when that is used up is abandoned as failed, its socket closed. Messages and details name the
host, bucket or path, never a secret (the configuration's secrets are also scrubbed from them).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import secrets as random
import socket
import stat as stat_mod
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Literal

import paramiko
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors import sftp as sftp_mod
from connectors.errors import AddressRefused, ConnectorError, HostKeyMismatch
from connectors.local import LocalConfig
from connectors.netguard import AddressGuard
from connectors.s3 import S3Config, S3Store
from connectors.sftp import SftpConfig

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0

Detail = dict[str, Any]


class StepStatus(StrEnum):
    """What became of one step."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ProbeStep(BaseModel):
    """One step of a connection test."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        description="The step: resolve, connect, host_key, authenticate, list (SFTP); resolve, "
        "head_bucket, list (S3); path (local folder); for export connectors write and delete "
        "replace list (SFTP), resolve, write, delete (S3), addresses, connect, ehlo, starttls, "
        "auth (e-mail).",
        examples=["host_key"],
    )
    status: StepStatus = Field(
        description="passed, failed, or skipped (an earlier step failed).", examples=["failed"]
    )
    ok: bool = Field(description="True when the step passed.", examples=[False])
    seconds: float = Field(description="How long the step took.", examples=[0.042])
    message: str = Field(
        description="What happened, for people: names the host, bucket or path, never a secret.",
        examples=[
            "127.0.0.1:2222 presents the host key ssh-ed25519 SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ"
            "4o0n1m6Yl7b3d5ZQ, and the connector pins none yet; refusing to connect. ..."
        ],
    )
    detail: Detail = Field(
        default_factory=dict,
        description="Machine-readable facts of the step, e.g. addresses (resolve), fingerprint "
        "and public_key to pin (host_key), entries (list), error: the error kind when it "
        "failed (address_refused, network, host_key, auth, access_denied, not_found, ...).",
        examples=[{"fingerprint": "SHA256:7Kx0mI6n0Jc9bZ4x0YpJ2b2w7pQ4o0n1m6Yl7b3d5ZQ"}],
    )


class ProbeReport(BaseModel):
    """The outcome of a connection test: every step in order, the first failure, the total."""

    model_config = ConfigDict(frozen=True)

    ok: bool = Field(description="True when every step passed.", examples=[False])
    type: Literal["sftp", "s3", "local", "email"] = Field(
        description="The store (or export connector) type tested."
    )
    target: str = Field(
        description="Where the store points (no secret).",
        examples=["sftp://acme-upload@sftp.example.com:22/upload"],
    )
    failed_step: str | None = Field(
        None, description="Name of the step that failed, if one did.", examples=["host_key"]
    )
    seconds: float = Field(description="How long the whole test took.", examples=[0.31])
    steps: list[ProbeStep] = Field(description="The steps, in the order they run.")


class StepFailed(Exception):
    """A step failed with a message for people and details for machines."""

    def __init__(self, message: str, detail: Detail | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


StepResult = tuple[str, Detail]
Step = tuple[str, Callable[[], StepResult]]


class _Budget:
    """The time left for the whole test, and what to close when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.limit = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self.expired = False

    def left(self) -> float:
        """Seconds left (never below a millisecond, so it can be passed as a timeout)."""
        return max(self._end - time.monotonic(), 0.001)

    def cut(self, seconds: float) -> float:
        """Return ``seconds`` cut to what is left of the test's limit."""
        return min(seconds, self.left())

    def hold(self, close: Callable[[], None]) -> None:
        """Close this resource when the test ends (at once if the limit has passed)."""
        with self._lock:
            if not self.expired:
                self._closers.append(close)
                return
        _quietly(close)

    def expire(self) -> None:
        """Close everything held, unblocking a step that is still waiting."""
        with self._lock:
            self.expired = True
            closers, self._closers = self._closers, []
        for close in reversed(closers):  # the transport before its socket
            _quietly(close)

    def run(self, name: str, step: Callable[[], StepResult]) -> StepResult:
        """Run a step in a thread of its own and wait for it while time is left."""
        box: list[StepResult | BaseException] = []

        def target() -> None:
            try:
                box.append(step())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box.append(exc)

        thread = threading.Thread(target=target, name=f"probe-{name}", daemon=True)
        thread.start()
        thread.join(self._end - time.monotonic())
        if not box:
            self.expire()
            raise StepFailed(
                f"no answer within the test's limit of {self.limit:g}s",
                {"error": "timeout", "timeout_seconds": self.limit},
            )
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result


def _quietly(close: Callable[[], None]) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        close()


def probe(
    config: SftpConfig | S3Config | LocalConfig,
    guard: AddressGuard | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    write: bool = False,
) -> ProbeReport:
    """Test a store configuration step by step (see the module doc). A failing store is a
    report, never an exception; only bad arguments raise (an unknown configuration type, a
    ``timeout_seconds`` that is not positive).

    ``guard`` is the SSRF policy for connectors created through the API (None: the
    configuration file's own connectors, any address). ``write`` (export connectors, SFTP and
    S3): instead of listing, write a probe file ``.callstream-probe-<hex>`` into the root
    (``write`` step) and delete it (``delete`` step).
    """
    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds!r}")
    budget = _Budget(timeout_seconds)
    kind: Literal["sftp", "s3", "local"]
    if isinstance(config, SftpConfig):
        kind, steps, target = (
            "sftp",
            _sftp_steps(config, guard, budget, write),
            _sftp_target(config),
        )
    elif isinstance(config, S3Config):
        store = S3Store(_s3_bounded(config, budget), guard)
        kind, steps, target = "s3", _s3_steps(store, guard, budget, write), store.description
        budget.hold(store.close)
    elif isinstance(config, LocalConfig):
        kind, steps, target = "local", _local_steps(config), f"file://{config.root}"
    else:
        raise TypeError(f"cannot test a {type(config).__name__}")
    return _run(kind, target, steps, _secrets(config), budget)


def run_steps(
    kind: Literal["sftp", "s3", "local", "email"],
    target: str,
    steps: list[Step],
    secrets: Iterable[str] = (),
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> ProbeReport:
    """Run checks of another kind (an e-mail relay) as a connection test: each step returns
    ``(message, detail)`` or raises :class:`StepFailed` (or a ``ConnectorError``); the report
    has the shape, limits and secret scrubbing of :func:`probe`. Blocking."""
    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds!r}")
    return _run(kind, target, steps, [s for s in secrets if s], _Budget(timeout_seconds))


def _run(
    kind: Literal["sftp", "s3", "local", "email"],
    target: str,
    steps: list[Step],
    secrets: list[str],
    budget: _Budget,
) -> ProbeReport:
    started = time.monotonic()
    results: list[ProbeStep] = []
    failed: str | None = None
    try:
        for name, step in steps:
            if failed is not None:
                results.append(
                    ProbeStep(
                        name=name,
                        status=StepStatus.SKIPPED,
                        ok=False,
                        seconds=0.0,
                        message=f"not run: the {failed} step failed",
                    )
                )
                continue
            begun = time.monotonic()
            try:
                message, detail = budget.run(name, step)
                status = StepStatus.PASSED
            except StepFailed as exc:
                message, detail, status = exc.message, exc.detail, StepStatus.FAILED
            except ConnectorError as exc:
                message, detail, status = str(exc), {"error": exc.kind}, StepStatus.FAILED
            except Exception as exc:  # a bug: report it on the step rather than lose the report
                log.exception("connection test step %s of %s failed unexpectedly", name, target)
                message = f"unexpected error: {type(exc).__name__}: {exc}"
                detail, status = {"error": "unexpected"}, StepStatus.FAILED
            if status is StepStatus.FAILED:
                failed = name
            results.append(
                ProbeStep(
                    name=name,
                    status=status,
                    ok=status is StepStatus.PASSED,
                    seconds=round(time.monotonic() - begun, 4),
                    message=_scrub(message, secrets),
                    detail=_scrub_detail(detail, secrets),
                )
            )
    finally:
        budget.expire()
    return ProbeReport(
        ok=failed is None,
        type=kind,
        target=_scrub(target, secrets),
        failed_step=failed,
        seconds=round(time.monotonic() - started, 4),
        steps=results,
    )


# -- secrets --------------------------------------------------------------------------------------


def _secrets(config: BaseModel) -> list[str]:
    values = (getattr(config, name) for name in type(config).model_fields)
    return [
        v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()
    ]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "**********")
    return text


def _scrub_detail(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_detail(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_detail(v, secrets) for v in value]
    return value


# -- resolve (shared) ---------------------------------------------------------------------------


def _resolve(host: str, port: int, guard: AddressGuard | None) -> StepResult:
    """Resolve ``host`` (through the guard when there is one) as a step."""
    try:
        if guard is not None:
            addresses = guard.resolve(host, port)
        else:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    except AddressRefused as exc:
        raise StepFailed(
            str(exc),
            {
                "error": exc.kind,
                "host": host,
                "address": exc.address,
                "reason": exc.reason,
            },
        ) from exc
    except OSError as exc:
        raise StepFailed(
            f"cannot resolve {host!r}: {exc.strerror or exc}",
            {"error": "network", "host": host},
        ) from exc
    checked = " (allowed by the address policy)" if guard is not None else ""
    found = "is an IP address" if addresses == [host] else f"resolves to {', '.join(addresses)}"
    return (
        f"{host} {found}{checked}",
        {"host": host, "port": port, "addresses": addresses},
    )


# -- SFTP ---------------------------------------------------------------------------------------


def _sftp_target(cfg: SftpConfig) -> str:
    return f"sftp://{cfg.username}@{cfg.host}:{cfg.port}{cfg.root}"


def _probe_name() -> str:
    return f".callstream-probe-{random.token_hex(8)}"


PROBE_BODY = b"callstream write test: this file is deleted at once\n"


def _sftp_steps(
    cfg: SftpConfig, guard: AddressGuard | None, budget: _Budget, write: bool
) -> list[Step]:
    where = f"{cfg.host}:{cfg.port}"
    addresses: list[str] = []
    session: dict[str, Any] = {}

    def resolve() -> StepResult:
        message, detail = _resolve(cfg.host, cfg.port, guard)
        addresses.extend(detail["addresses"])
        return message, detail

    def connect() -> StepResult:
        errors: list[str] = []
        for address in addresses:  # the checked addresses: no second lookup
            try:
                sock = socket.create_connection(
                    (address, cfg.port), budget.cut(cfg.connect_timeout_seconds)
                )
            except OSError as exc:
                errors.append(f"{address}: {exc.strerror or exc}")
                continue
            budget.hold(sock.close)
            session["sock"] = sock
            return (
                f"TCP connection to {address} port {cfg.port} open",
                {"address": address, "port": cfg.port},
            )
        raise StepFailed(
            f"no TCP connection to {where} ({'; '.join(errors)})",
            {"error": "network", "port": cfg.port, "addresses": list(addresses)},
        )

    def host_key() -> StepResult:
        transport = sftp_mod.new_transport(session["sock"], budget.cut(cfg.connect_timeout_seconds))
        budget.hold(transport.close)
        session["transport"] = transport
        try:
            transport.start_client(timeout=budget.cut(cfg.connect_timeout_seconds))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(
                f"SSH handshake with {where} failed: {exc or type(exc).__name__}",
                {"error": "network"},
            ) from exc
        key = transport.get_remote_server_key()
        detail: Detail = {
            "key_type": key.get_name(),
            "fingerprint": sftp_mod.fingerprint(key),
            "public_key": sftp_mod.public_key_line(key),
            "pinned": sftp_mod.fingerprint_of_pin(cfg.host_key) if cfg.host_key else None,
        }
        try:
            sftp_mod.check_host_key(transport, cfg, where)
        except HostKeyMismatch as exc:
            raise StepFailed(str(exc), {"error": exc.kind, **detail}) from exc
        return f"{where} presents the pinned host key {detail['fingerprint']}", detail

    def authenticate() -> StepResult:
        transport: paramiko.Transport = session["transport"]
        method = "password" if cfg.password is not None else "private key"
        detail: Detail = {"username": cfg.username, "method": method}
        try:
            sftp_mod.authenticate(transport, cfg, where)
        except ConnectorError as exc:
            raise StepFailed(str(exc), {"error": exc.kind, **detail}) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(
                f"authenticating as {cfg.username!r} on {where}: {exc or type(exc).__name__}",
                {"error": "network", **detail},
            ) from exc
        return f"logged in as {cfg.username!r} with a {method}", detail

    def list_root() -> StepResult:
        transport: paramiko.Transport = session["transport"]
        root = cfg.root
        try:
            client = sftp_mod.open_sftp(
                transport,
                budget.cut(cfg.connect_timeout_seconds),
                budget.cut(cfg.operation_timeout_seconds),
            )
            # Not held: closing the transport closes its channels without waiting on the link.
            entries = [a for a in client.listdir_attr(root) if a.filename not in (".", "..")]
        except FileNotFoundError as exc:
            raise StepFailed(
                f"folder {root!r} does not exist on {where}", {"error": "not_found", "root": root}
            ) from exc
        except PermissionError as exc:
            raise StepFailed(
                f"permission denied listing {root!r} on {where}",
                {"error": "access_denied", "root": root},
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(
                f"listing {root!r} on {where}: {exc or type(exc).__name__}",
                {"error": "network", "root": root},
            ) from exc
        return (
            f"listed {root!r}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}",
            {"root": root, "entries": len(entries)},
        )

    probe_path = posixpath.join(cfg.root, _probe_name())

    def write_probe() -> StepResult:
        transport: paramiko.Transport = session["transport"]
        root = cfg.root
        detail: Detail = {"root": root, "path": probe_path}
        try:
            client = sftp_mod.open_sftp(
                transport,
                budget.cut(cfg.connect_timeout_seconds),
                budget.cut(cfg.operation_timeout_seconds),
            )
            session["sftp"] = client
            with client.open(probe_path, "wbx") as out:
                out.write(PROBE_BODY)
        except FileNotFoundError as exc:
            raise StepFailed(
                f"folder {root!r} does not exist on {where}", {"error": "not_found", **detail}
            ) from exc
        except PermissionError as exc:
            raise StepFailed(
                f"permission denied writing a file into {root!r} on {where}",
                {"error": "access_denied", **detail},
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(
                f"writing {probe_path!r} on {where}: {exc or type(exc).__name__}",
                {"error": "network", **detail},
            ) from exc
        return f"wrote the probe file {probe_path!r} ({len(PROBE_BODY)} bytes)", detail

    def delete_probe() -> StepResult:
        client: paramiko.SFTPClient = session["sftp"]
        detail: Detail = {"path": probe_path}
        try:
            client.remove(probe_path)
        except PermissionError as exc:
            raise StepFailed(
                f"permission denied deleting the probe file {probe_path!r} on {where} (it is "
                "still there: delete it by hand)",
                {"error": "access_denied", **detail},
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise StepFailed(
                f"deleting {probe_path!r} on {where}: {exc or type(exc).__name__}",
                {"error": "network", **detail},
            ) from exc
        return f"deleted the probe file {probe_path!r}", detail

    last: list[Step] = (
        [("write", write_probe), ("delete", delete_probe)] if write else [("list", list_root)]
    )
    return [
        ("resolve", resolve),
        ("connect", connect),
        ("host_key", host_key),
        ("authenticate", authenticate),
        *last,
    ]


# -- S3 -----------------------------------------------------------------------------------------


def _s3_bounded(cfg: S3Config, budget: _Budget) -> S3Config:
    """The configuration with one attempt per request and timeouts within the test's limit."""
    return cfg.model_copy(
        update={
            "max_attempts": 1,
            "connect_timeout_seconds": budget.cut(cfg.connect_timeout_seconds),
            "read_timeout_seconds": budget.cut(cfg.read_timeout_seconds),
        }
    )


def _s3_steps(
    store: S3Store, guard: AddressGuard | None, budget: _Budget, write: bool
) -> list[Step]:
    cfg = store.config
    bucket = cfg.bucket

    def resolve() -> StepResult:
        url = urllib.parse.urlsplit(store.request_url())
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        message, detail = _resolve(host, port, guard)
        endpoint = f"{url.scheme}://{url.netloc}"
        return f"endpoint {endpoint}: {message}", {"endpoint": endpoint, **detail}

    def head_bucket() -> StepResult:
        store.open_client()
        region = store.head_bucket()
        where = f" (region {region})" if region else ""
        return (
            f"bucket {bucket!r}{where} exists and the credentials may use it",
            {"bucket": bucket, "region": region},
        )

    def list_prefix() -> StepResult:
        key = store.first_key()
        root = f"s3://{bucket}/{cfg.key_prefix}"
        found = "at least one object" if key is not None else "no objects yet"
        return f"listed {root}: {found}", {"prefix": cfg.key_prefix, "found": key is not None}

    name = _probe_name()
    key = f"s3://{bucket}/{cfg.key_prefix}{name}"

    def write_probe() -> StepResult:
        store.open_client()
        store.write(name, io.BytesIO(PROBE_BODY))
        return f"put the probe object {key}", {"key": cfg.key_prefix + name}

    def delete_probe() -> StepResult:
        store.delete(name)
        return f"deleted the probe object {key}", {"key": cfg.key_prefix + name}

    if write:  # an export key may lack ListBucket: writing is what it must be able to do
        return [("resolve", resolve), ("write", write_probe), ("delete", delete_probe)]
    return [("resolve", resolve), ("head_bucket", head_bucket), ("list", list_prefix)]


# -- local folder -------------------------------------------------------------------------------


def _local_steps(cfg: LocalConfig) -> list[Step]:
    def path() -> StepResult:
        root = str(cfg.root)
        detail: Detail = {"path": root}
        try:
            info = os.stat(root)
        except FileNotFoundError as exc:
            raise StepFailed(
                f"folder {root!r} does not exist", {"error": "not_found", **detail}
            ) from exc
        except OSError as exc:
            raise StepFailed(
                f"cannot stat {root!r}: {exc.strerror}", {"error": "io", **detail}
            ) from exc
        if not stat_mod.S_ISDIR(info.st_mode):
            raise StepFailed(f"{root!r} is not a folder", {"error": "not_regular", **detail})
        try:
            with os.scandir(root) as entries:
                count = sum(1 for _ in entries)
        except PermissionError as exc:
            raise StepFailed(
                f"permission denied listing {root!r}", {"error": "access_denied", **detail}
            ) from exc
        except OSError as exc:
            raise StepFailed(
                f"listing {root!r}: {exc.strerror}", {"error": "io", **detail}
            ) from exc
        return (
            f"listed {root!r}: {count} entr{'y' if count == 1 else 'ies'}",
            {**detail, "entries": count},
        )

    return [("path", path)]
