#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint and types, unit tests, integration tests against
# real servers (Kafka, OpenSSH sftp, PostgreSQL: started by the suite itself), 30 s of each
# fuzz harness, then the benchmarks, which print figures. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "==> deploy files: Kubernetes, compose, Dockerfile, Prometheus rules, dashboard (offline)"
.venv/bin/pytest tests/integration/test_deploy_files.py -q

# Three pytest-xdist processes, each with its own servers (broker, sshd with its own SFTP users,
# PostgreSQL, moto, SMTP): most integration tests wait on those servers, so three share two cores
# well (10.5 min instead of 22.5 serially). worksteal: the few long tests do not queue behind
# each other on one process. TEST_PROCESSES=1 runs them serially.
echo "==> unit and integration tests (${TEST_PROCESSES:-3} processes)"
.venv/bin/pytest tests/unit tests/integration -q --timeout=600 --durations=20 \
    -n "${TEST_PROCESSES:-3}" --dist worksteal \
    --ignore=tests/integration/test_deploy_files.py

echo "==> fuzzing: each harness for ${FUZZ_SECONDS:-10} s (fails on a crash)"
.venv/bin/python tests/fuzz/runner.py --seconds "${FUZZ_SECONDS:-10}"

echo "==> benchmarks (figures only)"
.venv/bin/pytest tests/benchmarks -q -s -m benchmark --timeout=900
