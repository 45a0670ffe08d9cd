"""A private OpenSSH sftp server on 127.0.0.1 for integration tests (needs root).

Contract:

* ``SftpServer(base_dir)`` does no I/O.  ``base_dir`` must be a path whose every component
  is root-owned and not group/other-writable (OpenSSH's ``ChrootDirectory`` rule), e.g.
  ``/srv/callstream-test/<uuid>``; missing components are created with mode 0755.  Never
  under ``/tmp`` (mode 1777: sshd drops the session after auth, the client sees a reset).
* ``start()`` generates an ed25519 host key, writes ``sshd_config``, creates/updates the
  system users ``cs_pw`` (password auth only) and ``cs_key`` (ed25519 public key only, the
  unencrypted private key is written under ``base_dir``), runs ``sshd -t`` and then
  ``/usr/sbin/sshd -D`` on 127.0.0.1 and a free port, and returns once the SSH banner is
  served.  Any failure raises :class:`ServerStartError` with the tail of the sshd log.
* Each user is chrooted (``ChrootDirectory`` + ``ForceCommand internal-sftp``) to
  ``users[name].home`` (root-owned on disk).  The only writable place is
  ``upload_dir(name)`` on disk, seen by the client as ``remote_upload_dir()`` (``/upload``).
* ``host_key_line`` (``"ssh-ed25519 AAAA..."``) and ``host_key_fingerprint``
  (``"SHA256:..."``) allow strict host-key pinning; clients must not auto-accept keys.
* ``stop()`` is idempotent and kills sshd and the session processes it forked.
* The system users are global: each ``start()`` sets a fresh random password for both, so
  two servers running at the same time must not rely on the older ``cs_pw`` password.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from . import ServerStartError, free_port

__all__ = ["SftpServer", "SftpUser"]

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PASSWORD_USER = "cs_pw"
KEY_USER = "cs_key"
#: Appended to the system user names (``cs_pw<suffix>``): lets test runs in separate checkouts,
#: and the pytest-xdist workers of one run (``gw0``, ``gw1`` ...), run at the same time without
#: resetting each other's passwords. Tests keep using the logical names ``cs_pw`` / ``cs_key`` as
#: keys of ``SftpServer.users``.
USER_SUFFIX = os.environ.get("CALLSTREAM_TEST_SFTP_USER_SUFFIX", "") + os.environ.get(
    "PYTEST_XDIST_WORKER", ""
)
_SERVER = "sshd"


@dataclass(frozen=True)
class SftpUser:
    """One chrooted SFTP account.

    ``home`` is the chroot root on disk (root-owned, read-only for the user); the writable
    sub-folder is ``home / "upload"``.  Exactly one of ``password`` / ``private_key_path``
    is set, matching the only authentication method the server accepts for that user.
    """

    name: str
    password: str | None
    private_key_path: Path | None
    home: Path


class SftpServer:
    """OpenSSH ``sshd`` serving chrooted ``internal-sftp`` to ``cs_pw`` and ``cs_key``."""

    host: str = "127.0.0.1"

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.config_path = self.base_dir / "sshd_config"
        self.log_path = self.base_dir / "sshd.log"
        self.pid_path = self.base_dir / "sshd.pid"
        self._host_key_path = self.base_dir / "hostkey" / "ssh_host_ed25519_key"
        self._keys_dir = self.base_dir / "keys"
        self._client_dir = self.base_dir / "client"
        chroot = self.base_dir / "chroot"
        self.users: dict[str, SftpUser] = {
            PASSWORD_USER: SftpUser(
                name=PASSWORD_USER + USER_SUFFIX,
                password=secrets.token_urlsafe(18),
                private_key_path=None,
                home=chroot / PASSWORD_USER,
            ),
            KEY_USER: SftpUser(
                name=KEY_USER + USER_SUFFIX,
                password=None,
                private_key_path=self._client_dir / f"{KEY_USER}_ed25519",
                home=chroot / KEY_USER,
            ),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._host_key_line: str | None = None
        self._host_key_fingerprint: str | None = None

    # ------------------------------------------------------------------ attributes
    @property
    def port(self) -> int:
        """TCP port sshd listens on (chosen by ``start()``)."""
        if self._port is None:
            raise RuntimeError("SftpServer.port is only known after start()")
        return self._port

    @property
    def host_key_line(self) -> str:
        """Public host key as ``"ssh-ed25519 AAAA..."`` (no hostname, no comment)."""
        if self._host_key_line is None:
            raise RuntimeError("SftpServer.host_key_line is only known after start()")
        return self._host_key_line

    @property
    def host_key_fingerprint(self) -> str:
        """Host key fingerprint as printed by ``ssh-keygen -lf`` (``"SHA256:..."``)."""
        if self._host_key_fingerprint is None:
            raise RuntimeError("SftpServer.host_key_fingerprint is only known after start()")
        return self._host_key_fingerprint

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def upload_dir(self, user: str) -> Path:
        """On-disk path of ``user``'s writable folder (``home / "upload"``)."""
        try:
            return self.users[user].home / "upload"
        except KeyError:
            raise KeyError(f"unknown SFTP user {user!r}; known: {sorted(self.users)}") from None

    def authorized_keys(self, user: str) -> Path:
        """The file sshd reads ``user``'s authorized public keys from (one OpenSSH line each)."""
        return self._keys_dir / self.users[user].name

    def remote_upload_dir(self) -> str:
        """The writable folder as the (chrooted) SFTP client sees it."""
        return "/upload"

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> None:
        """Prepare everything and start sshd; raise ``ServerStartError`` on any failure."""
        if self.running:
            raise RuntimeError(f"sshd already running on port {self._port}")
        deadline = time.monotonic() + timeout
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self._make_root_dirs(self.base_dir)
        for sub in (self._host_key_path.parent, self._keys_dir, self._client_dir):
            sub.mkdir(mode=0o755, exist_ok=True)
        self._client_dir.chmod(0o700)
        self._generate_keys()
        for user in self.users.values():
            self._prepare_user(user)

        last_error: ServerStartError | None = None
        for _attempt in range(3):
            self._port = free_port(self.host)
            self._write_config()
            self._check_config()
            try:
                self._launch(deadline)
                return
            except ServerStartError as exc:
                last_error = exc
                # Another process took the port between free_port() and bind(): retry.
                if "Address already in use" not in exc.log_tail or time.monotonic() > deadline:
                    break
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Kill sshd and every process it forked (sessions).  Safe to call repeatedly."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        victims = [*_descendants(proc.pid), proc.pid]
        for pid in victims:
            _signal(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        end = time.monotonic() + 2
        for pid in victims:
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)

    def __enter__(self) -> SftpServer:
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

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        try:
            res = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._fail(f"{what}: {exc}") from exc
        if res.returncode != 0:
            out = (res.stderr + res.stdout).strip()
            raise self._fail(f"{what} failed (exit {res.returncode}): {out}")
        return res.stdout

    def _make_root_dirs(self, path: Path) -> None:
        """Create missing components (0755, root) and check sshd's chroot ownership rule."""
        current = Path(path.anchor)
        for part in path.parts[1:]:
            current = current / part
            if not current.exists():
                try:
                    current.mkdir(mode=0o755)
                    current.chmod(0o755)
                except OSError as exc:
                    raise self._fail(f"cannot create {current}: {exc}") from exc
            st = current.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise self._fail(f"{current} is not a directory")
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise self._fail(
                    f"chroot path component {current} must be root-owned and not group/"
                    f"other-writable (uid={st.st_uid}, mode={stat.filemode(st.st_mode)}); "
                    "use a base_dir under /srv, not /tmp"
                )

    def _generate_keys(self) -> None:
        host_key = self._host_key_path
        for p in (host_key, host_key.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        self._run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(host_key)],
            "ssh-keygen (host key)",
        )
        pub = host_key.with_name(host_key.name + ".pub")
        key_type, key_b64, *_ = pub.read_text().split()
        self._host_key_line = f"{key_type} {key_b64}"
        listing = self._run([SSH_KEYGEN, "-l", "-f", str(pub)], "ssh-keygen -lf")
        fingerprint = listing.split()[1]
        if not fingerprint.startswith("SHA256:"):
            raise self._fail(f"unexpected ssh-keygen -lf output: {listing!r}")
        self._host_key_fingerprint = fingerprint

        key_user = self.users[KEY_USER]
        assert key_user.private_key_path is not None
        priv = key_user.private_key_path
        priv_pub = priv.with_name(priv.name + ".pub")
        for p in (priv, priv_pub):
            p.unlink(missing_ok=True)
        self._run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", KEY_USER, "-f", str(priv)],
            "ssh-keygen (client key)",
        )
        authorized = self._keys_dir / key_user.name
        authorized.write_text(priv_pub.read_text())
        authorized.chmod(0o644)
        # cs_pw gets no authorized key: an empty file makes that explicit.
        (self._keys_dir / self.users[PASSWORD_USER].name).write_text("")

    def _prepare_user(self, user: SftpUser) -> None:
        try:
            pwd.getpwnam(user.name)
        except KeyError:
            argv = ["useradd", "-M", "-d", "/", "-s", "/usr/sbin/nologin"]
            try:
                grp.getgrnam(user.name)
                argv += ["-g", user.name]
            except KeyError:
                argv += ["-U"]
            self._run([*argv, user.name], f"useradd {user.name}")
        # Always set a fresh password; for cs_key it is never revealed and only keeps the
        # account from being "locked" ('!' in shadow), which sshd rejects with UsePAM no.
        password = user.password or secrets.token_urlsafe(18)
        self._run(["chpasswd"], f"chpasswd {user.name}", stdin=f"{user.name}:{password}\n")
        entry = pwd.getpwnam(user.name)

        for folder in (user.home.parent, user.home):
            folder.mkdir(mode=0o755, exist_ok=True)
            os.chown(folder, 0, 0)
            folder.chmod(0o755)
        upload = user.home / "upload"
        upload.mkdir(mode=0o755, exist_ok=True)
        os.chown(upload, entry.pw_uid, entry.pw_gid)
        upload.chmod(0o755)

    def _write_config(self) -> None:
        pw = self.users[PASSWORD_USER]
        key = self.users[KEY_USER]
        lines = [
            f"Port {self.port}",
            "AddressFamily inet",
            f"ListenAddress {self.host}",
            f'HostKey "{self._host_key_path}"',
            f'PidFile "{self.pid_path}"',
            "UsePAM no",
            "PasswordAuthentication yes",
            "PermitEmptyPasswords no",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            f'AuthorizedKeysFile "{self._keys_dir}/%u"',
            "StrictModes no",
            f"AllowUsers {pw.name} {key.name}",
            "Subsystem sftp internal-sftp",
            "MaxSessions 50",
            "MaxStartups 100",
            "LogLevel VERBOSE",
            "UseDNS no",
            "PrintMotd no",
            "PermitTTY no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "",
            f"Match User {pw.name}",
            f'    ChrootDirectory "{pw.home}"',
            "    ForceCommand internal-sftp",
            "    AuthenticationMethods password",
            "",
            f"Match User {key.name}",
            f'    ChrootDirectory "{key.home}"',
            "    ForceCommand internal-sftp",
            "    AuthenticationMethods publickey",
            "",
        ]
        self.config_path.write_text("\n".join(lines))
        self.config_path.chmod(0o644)

    def _check_config(self) -> None:
        self.log_path.unlink(missing_ok=True)
        try:
            res = subprocess.run(
                [SSHD, "-t", "-f", str(self.config_path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._fail(f"sshd -t: {exc}") from exc
        if res.returncode != 0:
            self.log_path.write_text(res.stdout + res.stderr)
            raise self._fail(
                f"config test `sshd -t -f {self.config_path}` failed (exit {res.returncode}): "
                f"{(res.stderr + res.stdout).strip()}"
            )

    def _launch(self, deadline: float) -> None:
        self.log_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                raise self._fail(f"cannot execute {SSHD}: {exc}") from exc
        proc = self._proc
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise self._fail(f"sshd exited with code {code} before serving port {self.port}")
            if _ssh_banner(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._fail(f"no SSH banner on {self.host}:{self.port} in time")
            time.sleep(0.05)


def _ssh_banner(host: str, port: int) -> bool:
    """True if ``host:port`` accepts TCP and greets with an ``SSH-2.0-`` banner."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"SSH-2.0-")


def _descendants(root: int) -> list[int]:
    """PIDs of all live descendants of ``root`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw.rsplit(")", 1)[1].split()[0] != "Z"
