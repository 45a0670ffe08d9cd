"""SFTP benchmarks against a real OpenSSH server on loopback: poll cost and read throughput.

Run explicitly; the tables go to stdout, nothing about speed is asserted (only correctness:
counts, byte totals, SHA-256 of what was read)::

    .venv/bin/pytest tests/benchmarks/test_sftp_bench.py -s -q -p no:cacheprovider -m benchmark

1. ``Poller.poll()`` over ``SftpStore`` (and ``LocalStore`` on the same folder, for reference)
   with 10,000 and 100,000 files in one folder. The files are made directly on disk in the
   user's upload folder (empty, an hour old, owned like the folder).
2. A 500 MB random file read 1 MiB at a time while hashing with SHA-256 (as the fetcher does)
   through ``SftpStore.open()`` (read windows of 4, 8 and 32 MiB), paramiko's own
   ``SFTPFile.prefetch()`` and OpenSSH's ``sftp`` client on the same server and user. Besides
   MB/s it reports the
   CPU seconds spent by the client and by the server (sshd and its session processes) and the
   growth of this process's peak RSS during the read (``/proc/self/clear_refs`` resets VmHWM;
   paramiko's buffers are C heap, invisible to tracemalloc). Readers that are 20-50x slower
   than the rest are stopped after PREFETCH_LIMIT_S and report the rate so far.

   The reader's design (server-sized requests, bytearray channel buffer, AES-GCM first, an
   in-order pipeline) came from prototypes measured here; see connectors/sftp.py.

Everything runs as the key user ``cs_key``: other test sessions starting their own SftpServer
reset ``cs_pw``'s password, which would break a long run using password authentication.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
import paramiko.channel
import pytest
from fixtures import empty_folder
from report import PeakRss, print_table, timed
from servers.sshd import SftpServer
from support import sftp_config

from connectors.base import FileStore
from connectors.local import LocalConfig, LocalStore
from connectors.poller import PollConfig, Poller
from connectors.sftp import SftpStore, negotiated_read_length

pytestmark = pytest.mark.benchmark

USER = "cs_key"
MiB = 1024 * 1024
MB = 1_000_000  # throughput figures are in MB/s (10^6 bytes)
BIG_SIZE = 500 * MB
BIG_NAME = "big.bin"
PREFIX_SIZE = 64 * MiB  # prefetch() of a smaller file: 2,048 requests sent at once
PREFETCH_LIMIT_S = 6.0  # cut-off for the pathological readers (they are 20-50x slower)
READ_CHUNK = MiB  # what the fetcher asks of the file object
PARAMIKO_REQUEST = 32768  # paramiko's SFTPFile.MAX_REQUEST_SIZE and connectors.sftp._CHUNK


# ----------------------------------------------------------------------------- measurement


class ProcTree:
    """CPU seconds (and optionally peak RSS) of a process and everything below it.

    Sums each process's own utime+stime between :meth:`start` and :meth:`stop`. A finished
    sshd session's processes are re-parented to init as zombies (their time never reaches
    sshd's cutime), so pids are remembered once seen; with ``sample_every`` a thread keeps
    learning new pids (sessions of an external client, the client's own ssh child).
    ``peak_rss_mb`` sums each process's VmHWM as last sampled (read after exec, never from a
    wait4 ru_maxrss, which also holds the forking parent's RSS).
    """

    def __init__(self, root: int, sample_every: float | None = None, rss: bool = False) -> None:
        self._root = root
        self._every = sample_every
        self._rss = rss
        self._seen: set[int] = {root}
        self._cpu: dict[int, int] = {}
        self._hwm: dict[int, int] = {}
        self._base = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scan(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
        todo = [self._root]
        while todo:
            pid = todo.pop()
            self._seen.add(pid)
            todo.extend(children.get(pid, []))
        for pid in self._seen:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])  # utime + stime
                self._cpu[pid] = max(ticks, self._cpu.get(pid, 0))
                if self._rss:
                    status = Path(f"/proc/{pid}/status").read_text()
                    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
                    if match:
                        self._hwm[pid] = max(int(match.group(1)), self._hwm.get(pid, 0))

    def _run(self) -> None:
        assert self._every is not None
        while not self._stop.wait(self._every):
            self._scan()

    def start(self) -> None:
        if self._rss:  # the first scan may see a child between fork and exec
            self._stop.wait(self._every or 0)
        self._scan()
        self._base = sum(self._cpu.values())
        if self._every is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self, final_scan: bool = True) -> float:
        """Stop sampling; return the CPU seconds used since :meth:`start`."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if final_scan:
            self._scan()
        return (sum(self._cpu.values()) - self._base) / os.sysconf("SC_CLK_TCK")

    @property
    def peak_rss_mb(self) -> float:
        return sum(self._hwm.values()) * 1024 / MB


def _server_tree(server: SftpServer, sample_every: float | None = None) -> ProcTree:
    proc = server._proc
    assert proc is not None
    return ProcTree(proc.pid, sample_every)


# ----------------------------------------------------------------------------- 1. polling


def _make_files(folder: Path, start: int, stop: int, mtime: float) -> None:
    """Empty files ``call_<i>.csv`` for i in [start, stop), old and owned like ``folder``."""
    st = folder.stat()
    base = str(folder)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(start, stop):
        fd = os.open(f"{base}/call_{i:06d}.csv", flags, 0o644)
        try:
            os.utime(fd, (mtime, mtime))
            os.fchown(fd, st.st_uid, st.st_gid)
        finally:
            os.close(fd)


@dataclass
class PollFigures:
    store: str
    files: int
    first: float
    announce: float
    steady: list[float]
    iter_entries: float
    raw_listing: float | None


def _measure_polls(
    kind: str, store: FileStore, n: int, raw: Callable[[], int] | None
) -> PollFigures:
    # max_announce_per_poll=n: announce the whole folder in one poll (the default cap is 10,000).
    poller = Poller(store, PollConfig(max_announce_per_poll=n))
    first, r1 = timed(poller.poll)
    assert r1.listed == n and not r1.ready and r1.pending == n  # first sight: not yet stable
    announce, r2 = timed(poller.poll)
    assert r2.listed == n and len(r2.ready) == n
    poller.mark_announced(r2.ready)
    steady = []
    for _ in range(3):
        seconds, r = timed(poller.poll)
        assert r.listed == n and not r.ready and r.pending == 0
        steady.append(seconds)
    listing, count = timed(lambda: sum(1 for _ in store.iter_entries()))
    assert count == n
    raw_listing = None
    if raw is not None:
        raw_listing, raw_count = timed(raw)
        assert raw_count == n
    return PollFigures(kind, n, first, announce, steady, listing, raw_listing)


def test_poll_large_folder(sftp_server: SftpServer) -> None:
    folder = sftp_server.upload_dir(USER)
    empty_folder(folder)
    figures: list[PollFigures] = []
    made = 0
    mtime = time.time() - 3600
    setup = 0.0
    try:
        for n in (10_000, 100_000):
            seconds, _ = timed(lambda n=n, made=made: _make_files(folder, made, n, mtime))
            setup += seconds
            made = n
            with SftpStore(sftp_config(sftp_server, USER)) as store:
                client = store._client()
                root = sftp_server.remote_upload_dir()
                figures.append(
                    _measure_polls(
                        "sftp", store, n, lambda c=client, r=root: len(c.listdir_attr(r))
                    )
                )
            with LocalStore(LocalConfig(root=folder)) as local:
                figures.append(_measure_polls("local", local, n, None))
    finally:
        cleanup, _ = timed(lambda: empty_folder(folder))

    header = [
        "store",
        "files",
        "1st poll s",
        "2nd poll s",
        "steady s",
        "steady files/s",
        "1st files/s",
        "iter_entries s",
        "listdir_attr s",
    ]
    rows = [
        [
            f.store,
            f"{f.files:,}",
            f"{f.first:.3f}",
            f"{f.announce:.3f}",
            f"{statistics.median(f.steady):.3f}",
            f"{f.files / statistics.median(f.steady):,.0f}",
            f"{f.files / f.first:,.0f}",
            f"{f.iter_entries:.3f}",
            "-" if f.raw_listing is None else f"{f.raw_listing:.3f}",
        ]
        for f in figures
    ]
    print_table(
        "Poller.poll(): one folder, N empty files (PollConfig defaults, max_announce_per_poll=N)",
        header,
        rows,
        [
            "1st poll: first sight, every file pending (stability needs two polls);",
            "2nd poll: announces all N; steady: median of 3 polls after mark_announced(all).",
            "iter_entries: the store's listing alone; listdir_attr: paramiko's raw listing.",
            f"(creating the 100,000 files took {setup:.1f} s, deleting them {cleanup:.1f} s)",
        ],
    )


# ----------------------------------------------------------------------------- 2. reading


def _write_random(path: Path, size: int, like: Path) -> str:
    """Write ``size`` random bytes to ``path`` (owned like ``like``); return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(8 * MiB, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
        fh.flush()
        os.fsync(fh.fileno())  # no writeback competing with the first measurements
    st = like.stat()
    os.chown(path, st.st_uid, st.st_gid)
    return digest.hexdigest()


def _hash_stream(
    fh: BinaryIO, limit_s: float | None, t0: float, max_bytes: int | None
) -> tuple[int, str, bool]:
    """Read to EOF (or ``max_bytes``) in READ_CHUNK pieces while hashing; stop after ``limit_s``."""
    digest = hashlib.sha256()
    total = 0
    while max_bytes is None or total < max_bytes:
        want = READ_CHUNK if max_bytes is None else min(READ_CHUNK, max_bytes - total)
        chunk = fh.read(want)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        if limit_s is not None and time.perf_counter() - t0 > limit_s:
            return total, digest.hexdigest(), False
    return total, digest.hexdigest(), True


@dataclass
class ReadFigures:
    name: str
    nbytes: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    rss_mb: float | None
    ok: bool | None  # None: not verifiable (stopped early)
    note: str = ""
    steal_pct: float = 0.0  # CPU time the hypervisor gave to other guests meanwhile

    @property
    def mb_s(self) -> float:
        return self.nbytes / MB / self.seconds


def _steal_ticks() -> int:
    """Steal time of all CPUs so far (/proc/stat), in clock ticks."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])


def _steal_pct(ticks0: int, seconds: float) -> float:
    capacity = seconds * (os.cpu_count() or 1) * os.sysconf("SC_CLK_TCK")
    return 100 * (_steal_ticks() - ticks0) / capacity


def _measure_read(
    name: str,
    server: SftpServer,
    open_fn: Callable[[], BinaryIO],
    expect: tuple[int, str],
    *,
    limit_s: float | None = None,
    max_bytes: int | None = None,
    on_stop: Callable[[], None] | None = None,
    note: str = "",
) -> ReadFigures:
    """Time open + read-and-hash of one file object; peak RSS and CPU of both sides.

    ``on_stop`` runs when ``limit_s`` cut the read short, before the file is closed (closing
    the session there avoids draining megabytes of replies that nobody wants).
    """
    rss = PeakRss()
    rss.start()
    server_cpu = _server_tree(server)
    server_cpu.start()
    steal0 = _steal_ticks()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    fh = open_fn()
    complete = False
    try:
        nbytes, digest, complete = _hash_stream(fh, limit_s, t0, max_bytes)
        seconds = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
        server_seconds = server_cpu.stop()
        steal = _steal_pct(steal0, seconds)
        growth = rss.growth_mb()
    finally:
        if not complete and on_stop is not None:
            on_stop()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            fh.close()
    ok = (nbytes, digest) == expect if complete else None
    if not complete:
        note = f"stopped after {seconds:.0f} s at {nbytes / MB:.0f} MB; {note}".rstrip("; ")
    return ReadFigures(name, nbytes, seconds, client_cpu, server_seconds, growth, ok, note, steal)


def _openssh_get(
    name: str,
    server: SftpServer,
    work: Path,
    extra: list[str],
    expect: tuple[int, str],
    note: str = "",
) -> ReadFigures:
    """OpenSSH's sftp client: ``get`` the big file to tmpfs; wall time, CPU and max RSS."""
    key = server.users[USER].private_key_path
    assert key is not None
    known = work / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} {server.host_key_line}\n")
    dest = Path("/dev/shm") / f"callstream-bench-{uuid.uuid4().hex}.bin"
    batch = work / "batch"
    remote = f"{server.remote_upload_dir()}/{BIG_NAME}"
    batch.write_text(f"get {remote} {dest}\n")
    argv = [
        "sftp",
        "-q",
        "-F",
        "/dev/null",
        *extra,
        "-b",
        str(batch),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-P",
        str(server.port),
        f"{server.users[USER].name}@{server.host}",
    ]
    errors = work / "sftp.stderr"
    try:
        server_cpu = _server_tree(server, sample_every=0.1)
        server_cpu.start()
        steal0 = _steal_ticks()
        t0 = time.perf_counter()
        with errors.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        client = ProcTree(proc.pid, sample_every=0.05, rss=True)
        client.start()
        # wait4, not wait(): the CPU time of sftp and of the ssh it reaped.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        steal = _steal_pct(steal0, seconds)
        client.stop(final_scan=False)  # reaped: nothing left to read
        server_seconds = server_cpu.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, f"{argv}: {errors.read_text()}"
        size = dest.stat().st_size
        digest = hashlib.sha256()
        with dest.open("rb") as fh:
            while block := fh.read(8 * MiB):
                digest.update(block)
    finally:
        dest.unlink(missing_ok=True)
    return ReadFigures(
        name,
        size,
        seconds,
        usage.ru_utime + usage.ru_stime,
        server_seconds,
        client.peak_rss_mb,
        (size, digest.hexdigest()) == expect,
        note,
        steal,
    )


# ---- the read benchmark -------------------------------------------------------------------


def test_large_file_read_throughput(sftp_server: SftpServer, tmp_path: Path) -> None:
    folder = sftp_server.upload_dir(USER)
    big = folder / BIG_NAME
    remote = f"{sftp_server.remote_upload_dir()}/{BIG_NAME}"
    rows: list[ReadFigures] = []

    def store(window_mib: int = 4) -> SftpStore:
        return SftpStore(sftp_config(sftp_server, USER, read_window_bytes=window_mib * MiB))

    def measure(name: str, open_fn: Callable[[], BinaryIO], **kw: Any) -> None:
        rows.append(_measure_read(name, sftp_server, open_fn, full, **kw))

    try:
        t0 = time.perf_counter()
        full = (BIG_SIZE, _write_random(big, BIG_SIZE, folder))
        made_s = time.perf_counter() - t0
        with big.open("rb") as fh:
            prefix = (PREFIX_SIZE, hashlib.sha256(fh.read(PREFIX_SIZE)).hexdigest())

        measure("local file (page cache)", lambda: big.open("rb"), note="hashing ceiling")

        # OpenSSH first: the reference every other row is compared with.
        ctr = ["-c", "aes128-ctr", "-o", "MACs=hmac-sha2-256"]
        for name, extra, note in (
            ("openssh sftp (defaults)", [], "chacha20-poly1305, 255 KiB x 64 requests"),
            ("openssh sftp, aes128-ctr", ctr, "paramiko's cipher + MAC"),
            ("openssh sftp, aes128-ctr, -B 32768", [*ctr, "-B", "32768"], "our request size"),
        ):
            rows.append(_openssh_get(name, sftp_server, tmp_path, extra, full, note))

        # -- SftpStore.open() as it is --------------------------------------------------------
        cipher, request = "?", PARAMIKO_REQUEST
        for window_mib in (4, 8, 32):
            with store(window_mib) as s:
                transport = s._client().get_channel().get_transport()
                cipher = f"{transport.remote_cipher} + {transport.remote_mac}"
                measure(
                    f"SftpStore.open, window {window_mib} MiB",
                    lambda s=s: s.open(BIG_NAME),
                    on_stop=s.close,
                    note="as shipped (default window)" if window_mib == 4 else "",
                )

        # -- paramiko's prefetch() ------------------------------------------------------------
        def prefetched(c: paramiko.SFTPClient, size: int) -> BinaryIO:
            handle = c.open(remote, "rb")
            handle.prefetch(size)
            return handle  # type: ignore[return-value]

        with store() as s:
            request = negotiated_read_length(s._client())
            rows.append(
                _measure_read(
                    "paramiko prefetch(), first 64 MiB",
                    sftp_server,
                    lambda s=s: prefetched(s._client(), PREFIX_SIZE),
                    prefix,
                    max_bytes=PREFIX_SIZE,
                    limit_s=PREFETCH_LIMIT_S,
                    on_stop=s.close,
                    note="a 64 MiB file: 2,048 requests at once",
                )
            )
        with store() as s:
            measure(
                "paramiko prefetch(), whole file",
                lambda s=s: prefetched(s._client(), BIG_SIZE),
                limit_s=PREFETCH_LIMIT_S,
                on_stop=s.close,
                note="keeps every reply",
            )

        rows.append(
            _openssh_get(
                "openssh sftp (defaults), again", sftp_server, tmp_path, [], full, "drift check"
            )
        )
    finally:
        big.unlink(missing_ok=True)

    # The reference: OpenSSH with its defaults, mean of the first and the last measurement.
    reference = (rows[1].mb_s + rows[-1].mb_s) / 2
    header = [
        "reader",
        "MB/s",
        "seconds",
        "x openssh",
        "client CPU s",
        "server CPU s",
        "peak RSS +MB",
        "sha256",
        "steal %",
        "note",
    ]
    table = [
        [
            r.name,
            f"{r.mb_s:,.0f}",
            f"{r.seconds:.2f}",
            f"{r.mb_s / reference:.2f}",
            f"{r.client_cpu:.2f}",
            "-" if r.server_cpu is None else f"{r.server_cpu:.2f}",
            "-" if r.rss_mb is None else f"{r.rss_mb:,.0f}",
            {True: "ok", False: "MISMATCH", None: "-"}[r.ok],
            f"{r.steal_pct:.0f}",
            r.note,
        ]
        for r in rows
    ]
    print_table(
        f"Read {BIG_SIZE / MB:.0f} MB of random bytes, 1 MiB reads + SHA-256, user {USER} on "
        f"loopback ({os.cpu_count()} CPUs). paramiko negotiates {cipher}; the server's "
        f"limits@openssh.com max read is {request} B.",
        header,
        table,
        [
            f"File written in {made_s:.1f} s. 'x openssh': MB/s over the mean of the two "
            f"'openssh sftp (defaults)' rows ({reference:.0f} MB/s).",
            "openssh rows: wall time includes connect+auth; peak RSS: sftp + ssh VmHWM, absolute.",
            "client CPU: this process, all threads (openssh: sftp+ssh); server CPU: sshd tree.",
            "peak RSS +MB: VmHWM growth over the RSS before the read. steal %: CPU taken by "
            "the hypervisor; other work on the same CPUs is not in it. Compare rows of one run.",
        ],
    )
    assert all(r.ok is not False for r in rows), [r.name for r in rows if r.ok is False]
