"""Run the hostile-input corpus through a running ``callstream run`` and account for every row.

Contract of :func:`run_corpus` (``make hostile``: 10,000 files; CI: a 1,000-file slice):

* starts a real Kafka broker (:class:`~streams.embedded.kafka.LocalKafka`, unless a bootstrap
  address is given) and ``callstream run`` as its own process, as in production, with one tenant
  and one local-folder connector (fast polls, ``cleanup: keep``) on SQLite;
* writes the corpus (:mod:`corpus`) into the connector's folder while the service runs, then
  reads the file-arrivals, file-outcomes, conversations and dead-letter topics until every
  announced file has a final outcome and every safe name was announced, or until nothing new
  arrived for ``stall_timeout`` seconds;
* returns a :class:`Report`: files written / announced / skipped as unsafe names, outcomes by
  kind and reason, rows accepted and rejected by reason, the service's peak RSS (VmHWM sampled
  from ``/proc``), throughput and elapsed time, and every failed check naming the files:

  - ``crash``: the service process exited on its own;
  - ``stall_never_announced``: a file with a safe name was never announced;
  - ``stall_no_outcome`` / ``stall_still_incomplete``: announced, but no final outcome;
  - ``unskipped_names``: names neither announced nor counted as ``unsafe_name`` skips;
  - ``rows_unaccounted``: distinct conversations (file_id, source.row) differ from
    rows_accepted, or distinct dead letters (file_id, row) differ from rows_rejected;
  - ``rows_missing``: accepted + rejected is below the data rows the generator wrote (files not
    rejected as a whole);
  - ``valid_rows_rejected``: a file (or part) that must be accepted whole was not;
  - ``bad_rows_accepted``: fewer rows rejected than the generator planted bad rows;
  - ``unexpected_outcome``: the final outcome is not one the family allows;
  - ``reasons_mismatch``: ``rejected_by_reason`` does not sum to ``rows_rejected``.

``python tests/hostile/run.py --count 10000`` prints the report and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "integration"))

import corpus
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from corpus import MAY_SKIP, SAFE, Member
from prometheus_client.parser import text_string_to_metric_families
from support import (
    CODEC,
    connector,
    free_port,
    settings_for,
    start_service,
    unique_prefix,
    write_config,
)

from connectors.local import LocalConfig
from streams.embedded.kafka import LocalKafka
from streams.topics import LANES, Topics, ensure_topics

TENANT, CONNECTOR = "hostile", "inbox"
FINAL = ("processed", "partial", "invalid")
#: Dead letters of stages after ingest reject rows already counted as accepted (DeadLetter.stage:
#: parse, validate, produce, cases); every other stage accounts for a row of the file.
DOWNSTREAM_STAGES = ("cases", "analysis")
EXAMPLES = 8
STOP_GRACE = 40.0  # the issue asks for a bounded shutdown (default 30 s)


@dataclass
class Seen:
    """What the topics showed, reduced to what the checks need."""

    arrivals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path -> latest FileArrival."""
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """file_id -> every FileOutcome, in topic order."""
    conversations: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """file_id -> distinct source rows."""
    dead: dict[str, dict[int | None, str]] = field(default_factory=lambda: defaultdict(dict))
    """file_id -> row (None: the whole file) -> reason, ingest stages only."""
    downstream_dead: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    """Records read per topic, duplicates included."""
    last_progress: float = field(default_factory=time.monotonic)
    """When something new was last seen: a file announced or judged, a row not seen before.
    A service that retries a file forever republishes the same rows: that is no progress."""

    def final(self, file_id: str) -> dict[str, Any] | None:
        """The latest outcome of a file version, or None."""
        found = self.outcomes.get(file_id)
        return found[-1] if found else None


class TopicsReader:
    """One consumer over the four topics the checks need, decoding as it reads."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.seen = Seen()
        self._names = {
            topics.file_outcomes: ("callstream.FileOutcome", self._outcome),
            topics.dead_letter: ("callstream.DeadLetter", self._dead),
        }
        for lane in LANES:  # a file of processors.bulk_file_bytes or more: the bulk lane
            laned = topics.in_lane(lane)
            self._names[laned.file_arrivals] = ("callstream.FileArrival", self._arrival)
            self._names[laned.conversations] = ("callstream.Conversation", self._conversation)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"hostile-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe(list(self._names))

    def poll(self, seconds: float) -> None:
        """Read for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for msg in self._consumer.consume(1000, min(left, 0.2)):
                topic, value = msg.topic(), msg.value()
                if msg.error() is not None or topic is None or value is None:
                    continue
                schema, handle = self._names[topic]
                if handle(CODEC.decode(schema, value)):
                    self.seen.last_progress = time.monotonic()
                self.seen.records[topic] += 1

    # Each handler returns whether the record was news (see Seen.last_progress).

    def _arrival(self, r: dict[str, Any]) -> bool:
        new: bool = self.seen.arrivals.get(r["path"], {}).get("file_id") != r["file_id"]
        self.seen.arrivals[r["path"]] = r
        return new

    def _outcome(self, r: dict[str, Any]) -> bool:
        outcomes = self.seen.outcomes[r["file_id"]]
        outcomes.append(r)
        return len(outcomes) == 1 or outcomes[-2]["outcome"] != r["outcome"]

    def _conversation(self, r: dict[str, Any]) -> bool:
        if r["source"] is None:
            return False
        rows = self.seen.conversations[r["source"]["file_id"]]
        before = len(rows)
        rows.add(r["source"]["row"])
        return len(rows) > before

    def _dead(self, r: dict[str, Any]) -> bool:
        if r.get("stage") in DOWNSTREAM_STAGES:
            self.seen.downstream_dead[f"{r['stage']}:{r['reason']}"] += 1
            return True
        rows = self.seen.dead[r["file_id"]]
        new = r["row"] not in rows
        rows[r["row"]] = r["reason"]
        return new

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close()


@dataclass
class Failure:
    """One failed check on one file."""

    check: str
    family: str
    path: str
    detail: str


@dataclass
class Report:
    """Everything a hostile run measured; ``ok`` is False on any failure."""

    count: int
    seed: int
    files_written: int = 0
    bytes_written: int = 0
    write_seconds: float = 0.0
    files_announced: int = 0
    unsafe_skipped_per_poll: float | None = None
    excluded_names: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    outcome_reasons: Counter[str] = field(default_factory=Counter)
    rows_accepted: int = 0
    rows_rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    downstream_dead: Counter[str] = field(default_factory=Counter)
    poll_errors: Counter[str] = field(default_factory=Counter)
    max_rss_mb: float = 0.0
    processing_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    service_exit: int | None = None
    stop_seconds: float | None = None
    families: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    log_path: str = ""
    log_errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def text(self) -> str:
        """The report as printed."""
        judged = sum(n for k, n in self.outcomes.items() if k != "none")
        files_per_s = judged / max(self.processing_seconds, 1e-9)
        rows = self.rows_accepted + self.rows_rejected
        lines = [
            f"hostile corpus: {self.files_written} files ({self.bytes_written / corpus.MB:.0f} MB, "
            f"seed {self.seed}) written in {self.write_seconds:.1f}s",
            f"files: announced {self.files_announced}, skipped as unsafe names "
            f"{_fmt(self.unsafe_skipped_per_poll)} per poll, excluded by name "
            f"{self.excluded_names} (default '.*' glob)",
            "outcomes: "
            + _counts(self.outcomes, ("processed", "partial", "invalid", "incomplete")),
            "outcome reasons: " + (_counts(self.outcome_reasons) or "-"),
            f"rows: accepted {self.rows_accepted}, rejected {self.rows_rejected}"
            + (f" ({_counts(self.rejected_by_reason)})" if self.rejected_by_reason else ""),
        ]
        if self.downstream_dead:
            lines.append("dead letters after ingest: " + _counts(self.downstream_dead))
        if self.poll_errors:
            lines.append("connector poll errors: " + _counts(self.poll_errors))
        lines += [
            f"service: max RSS {self.max_rss_mb:.0f} MB; throughput "
            + (
                f"{files_per_s:.1f} files/s, {rows / self.processing_seconds:.0f} rows/s over "
                f"{self.processing_seconds:.1f}s from first announcement to last outcome"
                if self.processing_seconds > 0
                else "- (no outcome)"
            )
            + f"; elapsed {self.elapsed_seconds:.1f}s",
            (
                f"stopped on SIGTERM in {self.stop_seconds:.1f}s"
                if self.stop_seconds is not None
                else f"did not stop on SIGTERM within {STOP_GRACE:.0f}s (killed), or had crashed"
            )
            + f"; exit code {self.service_exit}",
        ]
        if self.log_errors:
            lines.append(f"service log {self.log_path}: most frequent ERROR lines:")
            lines += [f"  {n:6d} x {msg}" for msg, n in self.log_errors.most_common(5)]
        lines.append(
            f"{'family':24} {'files':>6} {'annc':>6} {'proc':>6} {'part':>6} "
            f"{'inval':>6} {'none':>6} {'FAIL':>6}"
        )
        for name, c in sorted(self.families.items()):
            lines.append(
                f"{name:24} {c['files']:6d} {c['announced']:6d} {c['processed']:6d} "
                f"{c['partial']:6d} {c['invalid']:6d} {c['none'] + c['incomplete']:6d} "
                f"{c['failed']:6d}"
            )
        if self.ok:
            lines.append("OK: every file accounted for, no crash, no stall")
            return "\n".join(lines)
        by_check: dict[str, list[Failure]] = defaultdict(list)
        for f in self.failures:
            by_check[f.check].append(f)
        files = len({f.path for f in self.failures if f.path})
        lines.append(f"FAILED: {len(self.failures)} failed checks on {files} files")
        for check, items in sorted(by_check.items()):
            fams = Counter(f.family for f in items)
            lines.append(f"  {check}: {len(items)} ({_counts(fams)})")
            shown: Counter[str] = Counter()
            for f in items:  # a few examples of each family
                if shown[f.family] < max(1, EXAMPLES // len(fams)):
                    shown[f.family] += 1
                    lines.append(f"    {f.family}: {_short(f.path)}: {f.detail}")
        return "\n".join(lines)


def _short(path: str, keep: int = 100) -> str:
    text = repr(path)
    return text if len(text) <= keep else f"{text[: keep // 2]}...{text[-keep // 2 :]}"


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _counts(c: Counter[str], order: Iterable[str] = ()) -> str:
    keys = [k for k in order if c.get(k)] + sorted(k for k in c if k not in order)
    return ", ".join(f"{k} {c[k]}" for k in keys)


# -- the service -------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def _metric(text: str, name: str, **labels: str) -> dict[str, float]:
    """Samples of metric ``name`` matching ``labels``, keyed by their remaining labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                rest = ",".join(f"{v}" for k, v in sorted(s.labels.items()) if k not in labels)
                out[rest] = s.value
    return out


def _log_errors(log: Path) -> Counter[str]:
    errors: Counter[str] = Counter()
    with contextlib.suppress(OSError), log.open("rb") as fh:
        for raw in fh:
            line = raw.decode("utf-8", "replace")
            if " ERROR " in line:
                msg = line.split(" ERROR ", 1)[1].strip()
                errors[msg[:160]] += 1
    return errors


class Service:
    """``callstream run`` as a child process, with its metrics endpoint."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc = start_service(config, log, {"CALLSTREAM_HTTP__PORT": str(self.port)})
        self.max_rss_mb = 0.0

    @property
    def url(self) -> str:
        """Base URL of the HTTP endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Sample memory; tell whether the process still runs."""
        self.max_rss_mb = max(self.max_rss_mb, _vm_hwm_mb(self.proc.pid))
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Wait until /healthz answers (the HTTP endpoint starts last)."""
        deadline = time.monotonic() + timeout
        while _http(f"{self.url}/healthz") is None:
            if not self.alive():
                raise RuntimeError(f"callstream exited on start:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"callstream not ready after {timeout}s:\n{_tail(self.log)}")
            time.sleep(0.3)

    def metrics(self) -> str:
        """The /metrics text ('' when unreachable)."""
        return _http(f"{self.url}/metrics") or ""

    def stop(self, grace: float = STOP_GRACE) -> float | None:
        """SIGTERM, then SIGKILL after ``grace``; return seconds to exit (None if killed)."""
        if self.proc.poll() is not None:
            return None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            return None
        return time.monotonic() - started


def _tail(log: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


# -- the run -----------------------------------------------------------------------------------


def run_corpus(
    count: int,
    workdir: Path,
    *,
    seed: int = 1,
    bootstrap: str | None = None,
    stall_timeout: float = 60.0,
    deadline_seconds: float = 3600.0,
    skip: Iterable[str] = (),
    say: Callable[[str], None] = print,
) -> Report:
    """Run ``count`` hostile files through a fresh service; see the module doc."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            broker = LocalKafka(workdir / "kafka")
            say("starting Kafka ...")
            broker.start(timeout=120)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap_servers
        prefix = unique_prefix()
        topics = Topics(prefix)
        ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), topics.all(), 3, 1)
        inbox = workdir / "inbox"
        inbox.mkdir()
        conn = connector(
            CONNECTOR,
            LocalConfig(root=inbox),
            interval_seconds=0.5,
            min_age_seconds=1,
            incomplete_grace_seconds=3,
            cleanup="keep",
        )
        settings = settings_for(bootstrap, prefix, workdir / "data", [conn], tenant=TENANT)
        config = write_config(workdir / "callstream.yaml", settings)
        reader = TopicsReader(bootstrap, topics)
        stack.callback(reader.close)
        service = Service(config, workdir / "service.log")
        stack.callback(service.stop)
        service.wait_ready(120)
        say(f"callstream is running (log {service.log}); writing {count} files into {inbox} ...")
        report = Report(count=count, seed=seed, log_path=str(service.log))
        t0 = time.monotonic()
        members: dict[str, Member] = {}
        for m in corpus.generate(inbox, count, seed, skip):
            members[m.path] = m
            report.bytes_written += m.size
        report.files_written = len(members)
        report.write_seconds = time.monotonic() - t0
        say(f"written in {report.write_seconds:.1f}s; waiting for outcomes ...")
        _watch(service, reader, members, stall_timeout, started + deadline_seconds, say)
        _scrape(service, report)
        report.max_rss_mb = service.max_rss_mb
        crashed = not service.alive()
        if not crashed:
            report.stop_seconds = service.stop()
        report.service_exit = service.proc.returncode
        reader.poll(1.0)
        _judge(report, members, reader.seen, crashed=crashed)
        report.log_errors = _log_errors(service.log)
    report.elapsed_seconds = time.monotonic() - started
    return report


def _watch(
    service: Service,
    reader: TopicsReader,
    members: dict[str, Member],
    stall_timeout: float,
    deadline: float,
    say: Callable[[str], None],
) -> None:
    """Read topics until everything is judged, nothing progresses any more, or the service died."""
    seen = reader.seen
    must = [p for p, m in members.items() if m.name == SAFE]
    last_note = time.monotonic()
    reader.seen.last_progress = time.monotonic()
    while service.alive() and time.monotonic() < deadline:
        reader.poll(0.5)
        announced = sum(1 for p in must if p in seen.arrivals)
        pending = [a for a in seen.arrivals.values() if not _is_final(seen.final(a["file_id"]))]
        if announced == len(must) and not pending and _balanced(seen):
            reader.poll(2.0)  # records of the last files may trail their outcomes
            if _balanced(seen):
                return
        idle = time.monotonic() - seen.last_progress
        if idle > stall_timeout:
            say(f"no progress for {idle:.0f}s: stopping ({len(pending)} files without outcome)")
            return
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            done = sum(1 for f in seen.outcomes.values() if _is_final(f[-1]))
            say(f"  announced {len(seen.arrivals)}, judged {done}, rss {service.max_rss_mb:.0f} MB")


def _is_final(outcome: dict[str, Any] | None) -> bool:
    return outcome is not None and outcome["outcome"] in FINAL


def _balanced(seen: Seen) -> bool:
    """Every judged file's records have been read."""
    for fid, outs in seen.outcomes.items():
        o = outs[-1]
        if len(seen.conversations.get(fid, ())) < o["rows_accepted"]:
            return False
        if len(seen.dead.get(fid, ())) < o["rows_rejected"]:
            return False
    return True


def _scrape(service: Service, report: Report) -> None:
    """Unsafe-name skips per poll (the counter grows on every poll) and poll errors."""
    labels = {"tenant": TENANT, "connector": CONNECTOR}

    def sample() -> tuple[float, float]:
        text = service.metrics()
        skips = _metric(text, "callstream_connector_files_skipped_total", reason="unsafe_name")
        polls = _metric(text, "callstream_connector_poll_duration_seconds_count", **labels)
        for kind, n in _metric(text, "callstream_connector_poll_errors_total", **labels).items():
            report.poll_errors[kind] = int(n)
        return sum(skips.values()), sum(polls.values())

    if not service.alive():
        return
    skips0, polls0 = sample()
    time.sleep(2.0)
    if not service.alive():
        return
    skips1, polls1 = sample()
    if polls1 > polls0:
        report.unsafe_skipped_per_poll = (skips1 - skips0) / (polls1 - polls0)
    elif polls1:
        report.unsafe_skipped_per_poll = skips1 / polls1


def _judge(report: Report, members: dict[str, Member], seen: Seen, *, crashed: bool) -> None:
    """Apply every check (see the module doc) and fill in the figures."""
    fail = report.failures.append
    if crashed:
        fail(Failure("crash", "-", "", f"service exited with {report.service_exit}"))
    unannounced_skippable: list[Member] = []
    first_announce: float | None = None
    last_decision: float | None = None
    for path, m in members.items():
        fam = report.families.setdefault(m.family, Counter())
        fam["files"] += 1
        arrival = seen.arrivals.get(path)
        if arrival is None:
            if m.name == SAFE:
                fail(Failure("stall_never_announced", m.family, path, "safe name, not announced"))
                fam["failed"] += 1
            elif m.name == MAY_SKIP:
                unannounced_skippable.append(m)
            else:
                report.excluded_names += 1
            continue
        fam["announced"] += 1
        report.files_announced += 1
        at = arrival["announced_at"].timestamp()
        first_announce = at if first_announce is None else min(first_announce, at)
        fid = arrival["file_id"]
        outcome = seen.final(fid)
        if outcome is None:
            fam["none"] += 1
            report.outcomes["none"] += 1
            fail(Failure("stall_no_outcome", m.family, path, f"file_id {fid}: no FileOutcome"))
            fam["failed"] += 1
            continue
        kind = outcome["outcome"]
        fam[kind] += 1
        report.outcomes[kind] += 1
        if outcome["reason"]:
            report.outcome_reasons[outcome["reason"]] += 1
        decided = outcome["decided_at"].timestamp()
        last_decision = decided if last_decision is None else max(last_decision, decided)
        problems = _check_file(
            m, outcome, seen.conversations.get(fid, set()), seen.dead.get(fid, {})
        )
        for check, detail in problems:
            fail(Failure(check, m.family, path, detail))
        if problems:
            fam["failed"] += 1
        report.rows_accepted += outcome["rows_accepted"]
        report.rows_rejected += outcome["rows_rejected"]
        report.rejected_by_reason.update(seen.dead.get(fid, {}).values())
    skipped = report.unsafe_skipped_per_poll or 0
    if len(unannounced_skippable) > skipped:
        for m in unannounced_skippable:
            fail(
                Failure(
                    "unskipped_names",
                    m.family,
                    m.path,
                    "neither announced nor counted "
                    f"as unsafe_name ({skipped:g} per poll for {len(unannounced_skippable)})",
                )
            )
    report.downstream_dead = seen.downstream_dead
    if first_announce is not None and last_decision is not None:
        report.processing_seconds = max(last_decision - first_announce, 0.0)


def _check_file(
    m: Member, outcome: dict[str, Any], conv_rows: set[int], dead: dict[int | None, str]
) -> list[tuple[str, str]]:
    """Row accounting and outcome checks for one judged file."""
    out: list[tuple[str, str]] = []
    kind, acc, rej = outcome["outcome"], outcome["rows_accepted"], outcome["rows_rejected"]
    counts = f"{kind}, {acc} accepted + {rej} rejected"
    if kind == "incomplete":
        return [("stall_still_incomplete", f"{counts}: never finalised")]
    if len(conv_rows) != acc or len(dead) != rej:
        out.append(
            (
                "rows_unaccounted",
                f"{counts}, but {len(conv_rows)} conversations and "
                f"{len(dead)} dead letters on the topics",
            )
        )
    by_reason = sum(outcome["rejected_by_reason"].values())
    if by_reason != rej:
        out.append(("reasons_mismatch", f"rejected_by_reason sums to {by_reason}, not {rej}"))
    if kind not in m.accept:
        why = f" ({outcome['reason']})" if outcome["reason"] else ""
        reasons = f"; dead letters: {dict(Counter(dead.values()))}" if dead else ""
        out.append(("unexpected_outcome", f"{counts}{why}; expected {'/'.join(m.accept)}{reasons}"))
    if None in dead:  # rejected as a whole: the row checks below do not apply
        return out
    if m.rows is not None and acc + rej < m.rows:
        out.append(("rows_missing", f"{counts} of {m.rows} data rows: {m.rows - acc - rej} lost"))
    if m.all_valid and m.rows is not None and (acc != m.rows or rej):
        why_rejected = dict(Counter(dead.values())) or ""
        out.append(("valid_rows_rejected", f"{counts} of {m.rows} valid rows {why_rejected}"))
    if rej < m.min_rejected:
        out.append(("bad_rows_accepted", f"{counts}; {m.min_rejected} planted bad row(s)"))
    return out


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the report; exit 1 on any failure."""
    parser = argparse.ArgumentParser(description="Run the hostile corpus through callstream.")
    parser.add_argument("--count", type=int, default=10_000, help="files to generate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        help="stop when nothing new arrived for this long (seconds)",
    )
    parser.add_argument("--deadline", type=float, default=3600.0, help="hard limit (seconds)")
    parser.add_argument(
        "--skip-family",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a family out (repeatable), e.g. to measure the rest",
    )
    parser.add_argument("--report-json", type=Path, help="write every failure here")
    args = parser.parse_args(argv)
    # A SIGTERM (CI timeout, kill) unwinds like Ctrl-C: the service and broker are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="callstream-hostile-"))
    try:
        report = run_corpus(
            args.count,
            workdir,
            seed=args.seed,
            bootstrap=args.bootstrap,
            stall_timeout=args.stall_timeout,
            deadline_seconds=args.deadline,
            skip=args.skip_family,
        )
        print(report.text())
        if args.report_json:
            args.report_json.write_text(json.dumps([asdict(f) for f in report.failures], indent=1))
        if not report.ok and not keep:
            print(f"service log tail:\n{_tail(Path(report.log_path), 20)}")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
