"""A private PostgreSQL server on 127.0.0.1 for integration tests (needs root).

Contract:

* ``PostgresServer(base_dir)`` does no I/O.  ``base_dir`` (e.g. a fresh temp dir) is made
  mode 0755 and must be reachable by the ``postgres`` system user (created if missing);
  the cluster lives in ``base_dir/data`` (owned by ``postgres``), the unix socket in
  ``base_dir/sock``, the server log in ``base_dir/postgres.log``.
* ``start()`` uses the newest ``/usr/lib/postgresql/<v>/bin``, runs ``initdb``
  (scram-sha-256 for TCP, trust for the local socket), starts ``postgres`` as the
  ``postgres`` user (via ``runuser``) on 127.0.0.1 and a free port with durability turned
  off (``fsync``, ``synchronous_commit``, ``full_page_writes``: test speed only), waits until
  it accepts connections and creates the login role ``callstream`` (random password) and the
  database ``callstream`` owned by it.  Any failure raises :class:`ServerStartError` with
  the tail of the server log.
* ``dsn`` is ``postgresql://callstream:<pw>@127.0.0.1:<port>/callstream``;
  ``async_url()`` is the same with the ``postgresql+asyncpg`` scheme (SQLAlchemy).
* ``reset()`` drops (forcibly) and recreates the ``callstream`` database.
* ``stop()`` is ``pg_ctl stop -m fast``; idempotent.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from . import ServerStartError, free_port

__all__ = ["PostgresServer"]

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
DB_USER = "callstream"
DB_NAME = "callstream"
_SERVER = "postgres"


def newest_bin_dir() -> Path:
    """The ``bin`` folder of the highest installed PostgreSQL major version."""
    found: list[tuple[int, Path]] = []
    for candidate in PG_ROOT.glob("*/bin"):
        version = candidate.parent.name
        if re.fullmatch(r"\d+", version) and (candidate / "postgres").is_file():
            found.append((int(version), candidate))
    if not found:
        raise ServerStartError(_SERVER, f"no {PG_ROOT}/<version>/bin/postgres installed")
    return max(found)[1]


class PostgresServer:
    """One throw-away PostgreSQL cluster with role and database ``callstream``."""

    host: str = "127.0.0.1"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self._pwfile = self.base_dir / "superuser.pw"
        self.password = secrets.token_urlsafe(18)
        self._bin: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ attributes
    @property
    def port(self) -> int:
        """TCP port (chosen by ``start()``)."""
        if self._port is None:
            raise RuntimeError("PostgresServer.port is only known after start()")
        return self._port

    @property
    def dsn(self) -> str:
        """libpq/asyncpg URL for role and database ``callstream`` over TCP."""
        return f"postgresql://{DB_USER}:{self.password}@{self.host}:{self.port}/{DB_NAME}"

    def async_url(self) -> str:
        """SQLAlchemy URL using the asyncpg driver."""
        return f"postgresql+asyncpg://{DB_USER}:{self.password}@{self.host}:{self.port}/{DB_NAME}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> None:
        """initdb, start postgres, create role/database; ``ServerStartError`` on failure."""
        if self.running:
            raise RuntimeError(f"postgres already running on port {self._port}")
        deadline = time.monotonic() + timeout
        self._bin = newest_bin_dir()
        entry = self._ensure_os_user()
        self._prepare_dirs(entry)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._initdb()

        last_error: ServerStartError | None = None
        for _attempt in range(3):
            self._port = free_port(self.host)
            try:
                self._launch(deadline)
                break
            except ServerStartError as exc:
                last_error = exc
                # Another process took the port between free_port() and bind(): retry.
                if "could not bind" not in exc.log_tail or time.monotonic() > deadline:
                    raise
        else:
            assert last_error is not None
            raise last_error
        if not fresh:  # restart of an existing cluster: role and database already exist
            return
        try:
            self._sql(
                f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}'",
                f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}",
            )
        except ServerStartError:
            self.stop()
            raise

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (then kill if needed).  Safe to call repeatedly."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and self._bin is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._as_postgres(
                    [
                        str(self._bin / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        "20",
                    ],
                    timeout=30,
                )
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def reset(self) -> None:
        """Drop and recreate database ``callstream`` (disconnecting its sessions)."""
        if not self.running:
            raise RuntimeError("PostgresServer.reset() needs a running server")
        try:
            self._sql(
                f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)",
                f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}",
            )
        except ServerStartError as exc:
            raise RuntimeError(f"postgres reset failed: {exc.reason}") from exc

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def _fail(self, reason: str) -> ServerStartError:
        return ServerStartError(_SERVER, reason, self.log_path)

    def _as_postgres(
        self, argv: list[str], timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", OS_USER, "--", *argv],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.base_dir,
        )

    def _run(self, argv: list[str], what: str) -> str:
        try:
            res = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._fail(f"{what}: {exc}") from exc
        if res.returncode != 0:
            raise self._fail(
                f"{what} failed (exit {res.returncode}): {(res.stderr + res.stdout).strip()}"
            )
        return res.stdout

    def _ensure_os_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            pass
        self._run(
            [
                "useradd",
                "--system",
                "-U",
                "-M",
                "-d",
                "/nonexistent",
                "-s",
                "/usr/sbin/nologin",
                OS_USER,
            ],
            f"useradd {OS_USER}",
        )
        return pwd.getpwnam(OS_USER)

    def _prepare_dirs(self, entry: pwd.struct_passwd) -> None:
        try:
            self.base_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.base_dir.chmod(0o755)
            for folder in (self.data_dir, self.socket_dir):
                folder.mkdir(mode=0o700, exist_ok=True)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
            self._pwfile.write_text(secrets.token_urlsafe(18) + "\n")
            os.chown(self._pwfile, entry.pw_uid, entry.pw_gid)
            self._pwfile.chmod(0o600)
        except OSError as exc:
            raise self._fail(f"cannot prepare {self.base_dir}: {exc}") from exc
        try:
            res = self._as_postgres(["test", "-w", str(self.data_dir)], timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._fail(f"runuser -u {OS_USER}: {exc}") from exc
        if res.returncode != 0:
            blocked = [
                str(p) for p in reversed(self.base_dir.parents) if not os.stat(p).st_mode & 0o001
            ]
            raise self._fail(
                f"user {OS_USER!r} cannot reach {self.data_dir} ({res.stderr.strip()}); "
                f"folders without o+x on the way: {blocked or 'none'}"
            )

    def _initdb(self) -> None:
        assert self._bin is not None
        argv = [
            str(self._bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            OS_USER,
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            f"--pwfile={self._pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        try:
            res = self._as_postgres(argv, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._fail(f"initdb: {exc}") from exc
        self.log_path.write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise self._fail(f"initdb failed (exit {res.returncode})")

    def _launch(self, deadline: float) -> None:
        assert self._bin is not None
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_destination": "stderr",
        }
        argv = [
            "runuser",
            "-u",
            OS_USER,
            "--",
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
        ]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with self.log_path.open("a") as log:
            log.write(f"--- starting postgres on {self.host}:{self.port}\n")
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.base_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise self._fail(f"cannot execute runuser/postgres: {exc}") from exc
        proc = self._proc
        isready = [
            str(self._bin / "pg_isready"),
            "-q",
            *self._connection_args("postgres"),
            "-t",
            "2",
        ]
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise self._fail(f"postgres exited with code {code} during start-up")
            ready = subprocess.run(
                isready, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=10
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._fail(f"not accepting connections on {self.host}:{self.port} in time")
            time.sleep(0.1)

    def sql(self, *statements: str) -> None:
        """Run each statement as superuser in database ``postgres`` (tests that take the
        ``callstream`` database away and give it back)."""
        if not self.running:
            raise RuntimeError("PostgresServer.sql() needs a running server")
        self._sql(*statements)

    def scalar(self, query: str) -> str:
        """The one value ``query`` returns in database ``callstream``, as text (psql, superuser,
        over the unix socket): a test watching the service's progress without a driver."""
        if not self.running:
            raise RuntimeError("PostgresServer.scalar() needs a running server")
        res = subprocess.run(
            self._psql(DB_NAME, query, "-A", "-t"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"psql {query!r} failed: {(res.stderr + res.stdout).strip()}")
        return res.stdout.strip()

    def _sql(self, *statements: str) -> None:
        """Run each statement as superuser over the trusted unix socket (psql)."""
        for statement in statements:
            self._run(
                self._psql("postgres", statement, "-q"),
                f"psql {statement.split(' PASSWORD ')[0]!r}",
            )

    def _psql(self, database: str, statement: str, *options: str) -> list[str]:
        """psql running ``statement`` as superuser in ``database`` over the unix socket."""
        assert self._bin is not None
        return [
            str(self._bin / "psql"),
            "-X",
            *options,
            "-v",
            "ON_ERROR_STOP=1",
            *self._connection_args(database),
            "-c",
            statement,
        ]

    def _connection_args(self, database: str) -> list[str]:
        """Socket folder, port, superuser and ``database``: how psql and pg_isready reach the
        server (over the trusted unix socket)."""
        return ["-h", str(self.socket_dir), "-p", str(self.port), "-U", OS_USER, "-d", database]
