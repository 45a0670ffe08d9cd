"""Run the atheris fuzz harnesses: the glue each harness calls, and the supervisor of ``make fuzz``.

A harness (``fuzz_<target>.py``, one per target in :data:`invariants.TARGETS`) imports the code
under test inside ``atheris.instrument_imports()`` so that libFuzzer sees its branches, then
calls :func:`fuzz_main` with its seed inputs. Run by hand, a harness takes libFuzzer's flags and
corpus folders or input files (``fuzz_csv.py crash-<sha>`` replays one input).

Supervisor (``python tests/fuzz/runner.py [--runs N | --seconds S] [TARGET ...]``): runs each
harness in turn in its own process (one core), keeps its log and any crashing input in
``var/fuzz/``, prints libFuzzer's progress lines and, at the end, one line per harness: target,
executions, executions/s, coverage edges (libFuzzer's ``cov:``), crashes. Exits 1 if any
harness crashed (a new finding, a timeout or running out of memory), else 0.

Known findings: a saved input in ``tests/fuzz/crashes/`` that still fails today marks its
signature (:func:`invariants.signature`) as known; a harness reports the first hit of each known
finding and goes on, so a run reaches its executions while the fix is pending, and a new kind of
failure still stops it. Once the code is fixed, the saved input passes, its signature is no
longer known, and its regression test (``tests/unit/streams/test_fuzz_regressions.py``, xfail
strict) reports XPASS.
``FUZZ_STRICT=1`` makes every finding a crash.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import atheris
from invariants import REPO, TARGETS, saved_crashes, signature

HERE = Path(__file__).resolve().parent
OUT = REPO / "var" / "fuzz"
#: Inputs up to 8 KiB: enough for 1,000-deep nesting and long fields, small enough to run fast.
MAX_LEN = 8192
#: One input taking longer than this is a finding (a hang); far above the slowest seen.
UNIT_TIMEOUT_SECONDS = 10


def known_findings(target: str) -> dict[str, str]:
    """Return signature -> saved input name for the saved inputs of ``target`` that fail today."""
    known: dict[str, str] = {}
    if os.environ.get("FUZZ_STRICT") == "1":
        return known
    check = TARGETS[target]
    for crash in saved_crashes(target):
        try:
            check(crash.read_bytes())
        except Exception as exc:  # noqa: BLE001 - any failure of a saved input is a known finding
            known.setdefault(signature(exc), crash.name)
    return known


def dictionary(tokens: Iterable[bytes]) -> str:
    """Return ``tokens`` as a libFuzzer dictionary (one quoted, escaped token a line)."""

    def quoted(token: bytes) -> str:
        return "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token
        )

    return "".join(f'"{quoted(t)}"\n' for t in tokens)


def fuzz_main(target: str, seeds: Iterable[bytes], tokens: Iterable[bytes] = ()) -> NoReturn:
    """Fuzz ``invariants.TARGETS[target]`` with libFuzzer's command line in ``sys.argv``.

    ``seeds`` are written into the first corpus folder (``var/fuzz/corpus/<target>`` if none is
    given); ``tokens`` become libFuzzer's dictionary unless the command line names one.
    """
    check = TARGETS[target]
    known = known_findings(target)
    for sig, name in known.items():
        print(f"fuzz: {target}: known finding {name} ({sig}) is tolerated", file=sys.stderr)
    flags = [a for a in sys.argv[1:] if a.startswith("-")]
    inputs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if not inputs:
        corpus = OUT / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        inputs = [str(corpus)]
    if Path(inputs[0]).is_dir():
        for i, seed in enumerate(seeds):
            (Path(inputs[0]) / f"seed-{i:03d}").write_bytes(seed)
    tokens = list(tokens)
    if tokens and not any(f.startswith("-dict=") for f in flags):
        OUT.mkdir(parents=True, exist_ok=True)
        words = OUT / f"{target}.dict"
        words.write_text(dictionary(tokens))
        flags.append(f"-dict={words}")
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:
            name = known.get(signature(exc))
            if name is None:
                raise
            if name not in seen:
                seen.add(name)
                print(f"fuzz: {target}: known finding {name} hit; going on", file=sys.stderr)

    atheris.Setup([sys.argv[0], *flags, *inputs], one_input)
    atheris.Fuzz()
    raise SystemExit(0)  # not reached: libFuzzer exits the process


# -- supervisor ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one harness run reported."""

    target: str
    returncode: int = 0
    seconds: float = 0.0
    executions: int = 0
    exec_per_second: float = 0.0
    coverage: int = 0
    features: int = 0
    crash_input: str | None = None
    known: list[str] = field(default_factory=list)

    @property
    def crashes(self) -> int:
        """1 when the run stopped on a finding (libFuzzer stops at the first), else 0."""
        return 0 if self.returncode == 0 else 1


_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)")
_SHOWN = ("INITED", "pulse", "DONE")


def run_harness(target: str, runs: int | None, seconds: int | None) -> Run:
    """Run one harness to the end and collect its figures (see module doc)."""
    OUT.mkdir(parents=True, exist_ok=True)
    artifacts = OUT / target
    artifacts.mkdir(exist_ok=True)
    limit = f"-runs={runs}" if runs is not None else f"-max_total_time={seconds}"
    result = Run(target)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as corpus:
        cmd = [
            sys.executable,
            str(HERE / f"fuzz_{target}.py"),
            limit,
            f"-max_len={MAX_LEN}",
            f"-timeout={UNIT_TIMEOUT_SECONDS}",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            corpus,
        ]
        started = time.monotonic()
        in_crash = False
        with (
            (OUT / f"{target}.log").open("w") as log,
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                in_crash = in_crash or "Uncaught Python exception" in line or "ERROR:" in line
                status = _STATUS.match(line)
                if status:
                    result.executions = int(status[1])
                    result.coverage, result.features = int(status[3]), int(status[4])
                if (
                    in_crash
                    or (status and status[2] in _SHOWN)
                    or line.startswith("fuzz:")
                    or line.startswith("stat::")
                ):
                    print(f"[{target}] {line.rstrip()[:300]}", flush=True)
                if m := re.match(r"stat::number_of_executed_units:\s+(\d+)", line):
                    result.executions = int(m[1])
                if m := re.search(r"Test unit written to (\S+)", line):
                    result.crash_input = m[1]
                if m := re.match(r"fuzz: \S+ known finding (\S+) hit", line):
                    result.known.append(m[1])
        result.returncode = proc.returncode
        result.seconds = time.monotonic() - started
    result.exec_per_second = result.executions / result.seconds if result.seconds else 0.0
    return result


def summary(results: list[Run]) -> str:
    """The closing table: one line per harness."""
    lines = [
        f"{'target':<8} {'execs':>10} {'execs/s':>9} {'cov':>6} {'ft':>6} "
        f"{'seconds':>8} {'crashes':>7}  known findings hit"
    ]
    for r in results:
        lines.append(
            f"{r.target:<8} {r.executions:>10,} {r.exec_per_second:>9,.0f} {r.coverage:>6} "
            f"{r.features:>6} {r.seconds:>8.0f} {r.crashes:>7}  {', '.join(r.known) or '-'}"
        )
    for r in results:
        if r.crashes:
            where = r.crash_input or f"no input written (exit {r.returncode})"
            lines.append(
                f"CRASH {r.target}: {where}; log {OUT / (r.target + '.log')}; replay: "
                f".venv/bin/python tests/fuzz/fuzz_{r.target}.py {where}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Supervise the harnesses named on the command line (default: all); see the module doc."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="executions per harness (default 1,000,000)")
    budget.add_argument("--seconds", type=int, help="seconds per harness instead of --runs")
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    runs = None if args.seconds else (args.runs or 1_000_000)
    results = []
    for target in args.targets or list(TARGETS):
        budget_text = f"{runs:,} executions" if runs else f"{args.seconds} s"
        print(f"==> fuzzing {target} for {budget_text}", flush=True)
        results.append(run_harness(target, runs, args.seconds))
    print("\n==> fuzzing summary\n" + summary(results), flush=True)
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
